"""The client wing: ``groupchat join``, a reader thread and an input loop, in a terminal or a pipe.

Start from :func:`~groupchat.client.terminal.run_client`.
"""
