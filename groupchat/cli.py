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
from groupchat.net import split_targets
from groupchat.passwords import chat_password, read_secret
from groupchat.protocol import DEFAULT_PORT, MAX_LINE_BYTES
from groupchat.server.flood import DEFAULT_ADDRESS_BURST, DEFAULT_ADDRESS_RATE, DEFAULT_BURST, DEFAULT_RATE
from groupchat.server.history import MAX_HISTORY, default_history_path
from groupchat.server.logs import RepeatFilter
from groupchat.server.sessions import DEFAULT_WINDOW_SECONDS
from groupchat.server.settings import (
    DEFAULT_REPLAY,
    MAX_HISTORY_MB,
    HANDSHAKE_TIMEOUT_SECONDS,
    MAX_CLIENTS,
    MAX_PER_ADDRESS,
    MAX_QUEUED_BYTES,
    PASSWORD_LOCKOUT_AFTER,
    PASSWORD_LOCKOUT_MINUTES,
    WRONG_PASSWORD_DELAY_SECONDS,
    ServerSettings,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="groupchat")
def cli() -> None:
    """A terminal group chat: one server, any number of clients, plain text lines (nc works too)."""


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True,
              help="Address to listen on; '::' for IPv6 and IPv4.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--max-line", type=click.IntRange(64), default=MAX_LINE_BYTES, show_default=True,
              help="Longest line in bytes; a longer one is refused.")
@click.option("--rate", type=click.FloatRange(0), default=DEFAULT_RATE, show_default=True,
              help="Lines per second one connection may send on average; 0 turns flood control off "
                   "(per address and for private messages too).")
@click.option("--burst", type=click.IntRange(1), default=DEFAULT_BURST, show_default=True,
              help="Lines one connection may send at once before --rate applies.")
@click.option("--address-rate", type=click.FloatRange(0), default=DEFAULT_ADDRESS_RATE, show_default=True,
              help="Lines per second all connections from one address may send together, "
                   "however often they reconnect (0: no such limit).")
@click.option("--address-burst", type=click.IntRange(1), default=DEFAULT_ADDRESS_BURST, show_default=True,
              help="Lines one address may send at once before --address-rate applies.")
@click.option("--max-queue", "max_queued_bytes", type=click.IntRange(4096), default=MAX_QUEUED_BYTES,
              show_default=True, metavar="BYTES",
              help="Outgoing bytes that may wait for one client before its oldest room messages "
                   "are dropped for it.")
@click.option("--max-clients", type=click.IntRange(0), default=MAX_CLIENTS, show_default=True,
              help="Most connections at once; 0: no limit.")
@click.option("--max-per-address", type=click.IntRange(0), default=MAX_PER_ADDRESS,
              show_default=True, help="Most connections from one address; 0: no limit.")
@click.option("--handshake-timeout", type=click.FloatRange(0.1), default=HANDSHAKE_TIMEOUT_SECONDS,
              show_default=True, help="Seconds a new connection has to finish TLS, password and name.")
@click.option("--idle-timeout", type=click.FloatRange(0), default=0, show_default=True,
              help="Seconds without a line before a client is dropped; 0: never.")
@click.option("--allow", multiple=True, metavar="CIDR",
              help="Accept only these addresses or blocks (repeatable).  [default: all]")
@click.option("--deny", multiple=True, metavar="CIDR",
              help="Refuse these addresses or blocks (repeatable).")
@click.option("--certfile", type=click.Path(dir_okay=False), default=None,
              help="Serve TLS with this certificate (PEM; may hold the key too).")
@click.option("--keyfile", type=click.Path(dir_okay=False), default=None,
              help="The certificate's private key, if not in --certfile.")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None,
              help="File whose first line is the password clients must give "
                   "(or set GROUPCHAT_PASSWORD).  [default: none]")
@click.option("--op-password-file", type=click.Path(dir_okay=False), default=None,
              help="File whose first line is the password for /op (operators may kick, ban, "
                   "set topics).  [default: no operators]")
@click.option("--wrong-password-delay", type=click.FloatRange(0), default=WRONG_PASSWORD_DELAY_SECONDS,
              show_default=True, metavar="SECONDS",
              help="Wait before answering a wrong password or /op; it doubles after 5 misses "
                   "from one address, up to 30 s.")
@click.option("--password-lockout-after", type=click.IntRange(0), default=PASSWORD_LOCKOUT_AFTER,
              show_default=True, metavar="N",
              help="Wrong passwords (or /op) from one address before it is locked out; 0: never.")
@click.option("--password-lockout-minutes", type=click.FloatRange(0), default=PASSWORD_LOCKOUT_MINUTES,
              show_default=True, metavar="MINUTES", help="How long a locked-out address may not guess; 0: no lockout.")
@click.option("--history", "history_path", type=click.Path(dir_okay=False), default=None,
              help="The history database (SQLite).  [default: $XDG_DATA_HOME/groupchat/history.db, "
                   "else ~/.local/share/groupchat/history.db]")
@click.option("--no-history", is_flag=True, help="Keep history in memory only, for this run.")
@click.option("--retention", "retention_days", type=click.FloatRange(0), default=0,
              help="Days of history to keep; 0 keeps everything.  [default: 0]")
@click.option("--max-history-mb", type=click.IntRange(0), default=MAX_HISTORY_MB, show_default=True,
              metavar="MB", help="Megabytes of messages history keeps (the file takes up to about "
                                 "4 times this); past it the oldest are pruned.  0: no bound.")
@click.option("--replay", type=click.IntRange(0, MAX_HISTORY), default=DEFAULT_REPLAY, show_default=True,
              help="Lines of a room's history shown on entering it.")
@click.option("--redis", metavar="URL", envvar="GROUPCHAT_REDIS", default=None,
              help="Be one node of the chat shared by every server given this Redis "
                   "(redis://HOST:PORT/DB, rediss:// for TLS; or set GROUPCHAT_REDIS).  "
                   "Needs pip install 'groupchat[redis]'.")
@click.option("--resume-window", type=click.FloatRange(0), default=DEFAULT_WINDOW_SECONDS, show_default=True,
              metavar="SECONDS", help="How long a dropped connection's name, room and session are held for "
                                      "it to /resume; 0: no sessions, a drop is a leave.")
def serve(host: str, port: int, password_file: str | None, op_password_file: str | None,
          history_path: str | None, no_history: bool, **limits) -> None:
    """Run a chat server until Ctrl-D on its terminal, SIGINT or SIGTERM."""
    from groupchat.server.tcp import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter())  # a flood of refusals or guesses is counted, not written
    with _errors_as_one_line():
        if limits["keyfile"] and not limits["certfile"]:
            raise GroupchatError("--keyfile needs --certfile")
        if no_history and history_path:
            raise GroupchatError("--history and --no-history contradict each other")
        settings = ServerSettings(
            password=chat_password(password_file),
            op_password=read_secret(op_password_file, "operator password") if op_password_file else None,
            history_path=None if no_history else str(history_path or default_history_path()),
            **limits)
        run_server(host=host, port=port, settings=settings,
                   console=sys.stdin if sys.stdin.isatty() else None)


@cli.command()
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535), required=False)
@click.option("--name", default=None, help="Your name in the chat  [default: your login name]")
@click.option("--tls", is_flag=True, help="Connect with TLS, verifying the server's certificate.")
@click.option("--cafile", type=click.Path(dir_okay=False), default=None,
              help="Trust the CA certificates in this file (with --tls).  [default: the system's]")
@click.option("--insecure", is_flag=True,
              help="With --tls, do not verify the certificate (encrypts, but anyone could be the server).")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None,
              help="File whose first line is the server's password (or set GROUPCHAT_PASSWORD). "
                   "[default: asked for at a terminal]")
@click.option("--no-bell", is_flag=True, help="No terminal bell on a mention or a private message.")
@click.option("--json", "json_events", is_flag=True,
              help="For programs: print the server's events as JSON Lines on stdout; read lines "
                   "(messages, /commands or JSON operations) from stdin, and exit 0 once all are answered.")
@click.option("--no-reconnect", is_flag=True,
              help="Exit (status 1) when the connection drops, instead of reconnecting by itself.")
def join(host: str, port: int | None, name: str | None, tls: bool, cafile: str | None, insecure: bool,
         password_file: str | None, no_bell: bool, json_events: bool, no_reconnect: bool) -> None:
    """Join the chat served at HOST (name or address; HOST:PORT and [IPv6]:PORT work too) on
    PORT, 7111 unless given.  Several servers of one chat go comma-separated
    (host1:port1,host2:port2): the first that answers is joined, and after a drop the next."""
    from groupchat.client.terminal import run_client
    from groupchat.tls import client_context

    with _errors_as_one_line():
        try:
            addresses = split_targets(host, port, DEFAULT_PORT)
        except ValueError as exc:
            raise GroupchatError(str(exc)) from exc
        if (cafile or insecure) and not tls:
            raise GroupchatError("--cafile and --insecure need --tls")
        password = chat_password(password_file)
        sys.exit(run_client(addresses=addresses, name=name or _login_name(), password=password,
                            tls=client_context(cafile, insecure) if tls else None, bell=not no_bell,
                            json_events=json_events, reconnect=not no_reconnect))


@cli.command()
@click.argument("scenario", type=click.Choice(["fanout", "latency", "scale"]))
@click.option("--target", default="groupchat", show_default=True, metavar="TARGET",
              help="Server to measure: groupchat, relay, ncat, or groupchat:N (N nodes through "
                   "--redis); started by the bench, unless --host/--port.")
@click.option("--compare", metavar="T1,T2,...", default=None,
              help="Measure several targets in interleaved rounds, e.g. groupchat,relay,ncat or "
                   "groupchat:3,groupchat:1,groupchat; the summary gives ratios to the naive relay.")
@click.option("--nodes", type=click.IntRange(1), default=None,
              help="Start groupchat as this many nodes sharing the --redis Redis, the clients dealt "
                   "to them in turn; reports the latency across nodes.  [default: 1 with --redis]")
@click.option("--redis", metavar="URL", default=None,
              help="A Redis of the bench's own for the nodes (redis://HOST:PORT/DB); the bench never "
                   "starts one.  Needs pip install 'groupchat[redis]'.")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Rounds per target.")
@click.option("--host", default=None, help="Measure the server running here instead (with --port).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Its port.")
@click.option("--clients", type=click.IntRange(1), default=None,
              help="Clients connected; in scale, idle ones besides the senders.  "
                   "[default: fanout 50, latency 50, scale 10000]")
@click.option("--senders", type=click.IntRange(1), default=None,
              help="Clients that send.  [default: fanout 5, latency 10, scale 1]")
@click.option("--messages", type=click.IntRange(1), default=None,
              help="Lines each sender sends.  [default: fanout 2000, latency 1000, scale 100]")
@click.option("--size", type=click.IntRange(1, 4096), default=None,
              help="Bytes per line, newline included.  [default: 64]")
@click.option("--rate", type=click.FloatRange(0), default=None,
              help="Lines per second per sender; 0: as fast as the server takes them.  "
                   "[default: latency 100, others 0]")
@click.option("--mode", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="How groupchat's clients speak: its text lines, or its JSON Lines mode "
                   "(/mode json, as programs use it).  The relay and ncat always speak text.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Load generator processes.  [default: CPUs, at most 4]")
@click.option("--server-arg", "server_args", multiple=True, metavar="ARG",
              help="One more argument for the groupchat serve the bench starts (repeatable), "
                   "e.g. --server-arg=--no-history.")
@click.option("--timeout", type=click.FloatRange(1), default=10.0, show_default=True,
              help="Seconds without progress before a round gives up (and counts what is "
                   "missing as lost).")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object instead of text.")
def bench(scenario: str, target: str, compare: str | None, rounds: int, host: str | None,
          port: int | None, clients: int | None, senders: int | None, messages: int | None,
          size: int | None, rate: float | None, mode: str, workers: int | None,
          server_args: tuple[str, ...], timeout: float, json_output: bool, nodes: int | None,
          redis: str | None) -> None:
    """Measure a server under load: SCENARIO is fanout, latency or scale.  Exits 1 if any line
    was lost, duplicated or reordered."""
    from groupchat.bench.runner import DEFAULT_WORKERS, run_bench

    targets = [t.strip() for t in compare.split(",") if t.strip()] if compare else [target]
    with _errors_as_one_line():
        sys.exit(run_bench(scenario, targets=targets, host=host, port=port, clients=clients,
                           senders=senders, messages=messages, size=size, rate=rate, mode=mode,
                           rounds=rounds, workers=workers or DEFAULT_WORKERS,
                           server_args=server_args, timeout=timeout, json_output=json_output,
                           nodes=nodes, redis=redis))


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
