"""The ``groupchat`` command: thin click wrappers; the library modules do the work."""

from __future__ import annotations

import getpass
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

import click

from groupchat import __version__
from groupchat.errors import GroupchatError
from groupchat.protocol import DEFAULT_PORT


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="groupchat")
def cli() -> None:
    """A terminal group chat: one server, any number of clients, plain text lines (nc works too)."""


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True,
              help="Address to listen on; '::' for IPv6 and IPv4.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--op-password-file", type=click.Path(dir_okay=False), default=None,
              help="File whose first line is the password for /op (operators may kick, ban, "
                   "set topics).  [default: no operators]")
def serve(host: str, port: int, op_password_file: str | None) -> None:
    """Run a chat server until Ctrl-D on its terminal, SIGINT or SIGTERM."""
    from groupchat.server import serve as run_server
    from groupchat.settings import ServerSettings, read_secret

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    with _errors_as_one_line():
        settings = ServerSettings(
            op_password=read_secret(op_password_file, "operator password") if op_password_file else None)
        run_server(host=host, port=port, settings=settings,
                   console=sys.stdin if sys.stdin.isatty() else None)


@cli.command()
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("--name", default=None, help="Your name in the chat  [default: your login name]")
def join(host: str, port: int, name: str | None) -> None:
    """Join the chat served at HOST PORT."""
    from groupchat.client import run_client

    with _errors_as_one_line():
        sys.exit(run_client(host=host, port=port, name=name or _login_name()))


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER, e.g. in a bare container
        return "guest"


@contextmanager
def _errors_as_one_line() -> Iterator[None]:
    """Turn a :class:`GroupchatError` into click's one-line ``Error: ...`` and exit status 1."""
    try:
        yield
    except GroupchatError as exc:
        raise click.ClickException(str(exc)) from exc


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="groupchat")
