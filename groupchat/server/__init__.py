"""The server wing: a ``ThreadingTCPServer`` whose handlers hand lines to the chat.

Start from :class:`~groupchat.server.tcp.ChatServer` (sockets, one thread per connection)
and :class:`~groupchat.server.chat.Chat` (who says what to whom, no sockets).
"""
