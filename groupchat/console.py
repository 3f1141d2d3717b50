"""The server's own terminal: end of input (Ctrl-D) stops the server."""

from __future__ import annotations

from typing import Callable, TextIO

CONSOLE_HELP = "Press Ctrl-D to stop the server."


def watch_console(console: TextIO, stop: Callable[[], None]) -> None:
    """Read the server's terminal until end of input, then call ``stop``."""
    for _line in console:
        print(CONSOLE_HELP, flush=True)
    stop()
