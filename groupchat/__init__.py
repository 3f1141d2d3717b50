"""groupchat: a terminal group-chat server and client that speaks plain text lines."""

__version__ = "0.1.0"
