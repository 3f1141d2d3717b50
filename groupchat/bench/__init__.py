"""The benchmark wing: ``groupchat bench``, its load generator, and the naive relay it compares with.

Start from :func:`~groupchat.bench.runner.run_bench`.
"""
