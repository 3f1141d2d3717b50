"""The ``groupchat join`` client: a reader thread prints what the server sends, the input loop sends.

With stdin a terminal the input loop is a prompt_toolkit prompt in the main thread, and incoming
lines are printed above it (``patch_stdout``) so they never garble a half-typed line; each line
you send is echoed as the others will see it.  With stdin a pipe or a file, its lines are sent
as they come; at its end the client half-closes the connection and waits a little for the
server to close, printing whatever still arrives.

At a terminal, lines are coloured (:mod:`groupchat.client.colours`) unless stdout is not a terminal
or ``NO_COLOR`` is set, a mention or a private message rings the bell, Tab completes commands
and names (:mod:`groupchat.client.completion`) and the up arrow recalls your earlier lines.

The decisions are small classes with no I/O, tested by calling them: :class:`Handshake` (what
to do with each line until the server lets you in) and :class:`Me` (how your own lines look
to the others, your name after ``/nick``, whether you said ``/quit``).  The rest moves bytes;
over TLS the two threads share the connection through a :class:`TLSConnection`.
"""

from __future__ import annotations

import enum
import functools
import os
import socket
import ssl
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TextIO, Union

from prompt_toolkit import PromptSession, prompt
from prompt_toolkit.application import Application
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from groupchat.client.colours import Painter, colour_allowed
from groupchat.client.completion import ChatCompleter, KnownNames
from groupchat.errors import ConnectError, ConnectionLostError, NameRefusedError, NoNewlineError
from groupchat.net import format_address
from groupchat.passwords import PASSWORD_ENV
from groupchat.protocol import (
    ENCODING,
    LINE_NOTICE,
    MAX_LINE_BYTES,
    NAME_PROMPT,
    PASSWORD_PROMPT,
    STAMP_FORMAT,
    LineBuffer,
    LineTooLong,
    clean_text,
    encode_line,
    is_refusal,
    is_welcome,
    message_text,
    parse_line,
    parse_rename,
    refusal_reason,
    render_action,
    render_message,
    split_command,
)
from groupchat.tls import TLSConnection, describe_tls_error

# For connecting, and then for each answer during the handshake: a port that is not a
# groupchat server (it never asks for a name) fails instead of hanging.
CONNECT_TIMEOUT_SECONDS = 10.0
# Piped input: after the last line, how long to wait for the server to close and print what comes.
DRAIN_TIMEOUT_SECONDS = 5.0
# How long to wait for the reader thread once its socket is shut down (it ends at once).
STOP_TIMEOUT_SECONDS = 1.0
READ_BYTES = 64 * 1024
# Longest line taken from the server: a relayed line is its sender's (MAX_LINE_BYTES, or what a
# server's --max-line allows) plus a stamp and a name.
MAX_SERVER_LINE_BYTES = 16 * MAX_LINE_BYTES
PROMPT = "> "
ASK_NAME = "Name: "
ASK_PASSWORD = "Password: "

Line = Union[str, LineTooLong]


# -- decisions, no I/O ------------------------------------------------------------------------

class Step(enum.Enum):
    """What to do with one line the server sent during the handshake."""

    SEND_PASSWORD = enum.auto()  # the server has a password and asks for it
    SEND_NAME = enum.auto()  # the server asks for the name
    ASK_ANOTHER_NAME = enum.auto()  # it refused the name and asks again
    SHOW = enum.auto()  # a line for the person: a refusal, or anything unexpected
    PASSWORD_REFUSED = enum.auto()  # the refusal of the password just sent: show it; it is over
    JOINED = enum.auto()  # the welcome: show it; the chat has begun


class Handshake:
    """The client's half of the handshake (password, name): fed the server's lines, it says what next.

    >>> handshake = Handshake("bob")
    >>> handshake.feed(NAME_PROMPT).name
    'SEND_NAME'
    >>> handshake.feed('*** Sorry, the name "bob" is taken.').name
    'SHOW'
    >>> handshake.feed(NAME_PROMPT).name, handshake.refusal
    ('ASK_ANOTHER_NAME', 'the name "bob" is taken')
    >>> handshake.rename("rob")
    >>> handshake.feed("*** Welcome, rob! Here now: bob.").name
    'JOINED'

    A refusal that answers the password, not a name, ends it:

    >>> handshake = Handshake("bob")
    >>> handshake.feed(PASSWORD_PROMPT).name
    'SEND_PASSWORD'
    >>> handshake.feed("*** Sorry, wrong password; goodbye.").name
    'PASSWORD_REFUSED'
    """

    def __init__(self, name: str) -> None:
        self.name = name.strip()  # as the server will take it
        self.refusal: Optional[str] = None  # the server's last reason for refusing a name
        self._password_pending = False  # a password was asked for, and no name yet

    def feed(self, line: Line) -> Step:
        if isinstance(line, LineTooLong):
            return Step.SHOW
        if line == PASSWORD_PROMPT:
            self._password_pending = True
            return Step.SEND_PASSWORD
        if is_welcome(line):
            return Step.JOINED
        if is_refusal(line):
            if self._password_pending:
                return Step.PASSWORD_REFUSED
            self.refusal = refusal_reason(line)
            return Step.SHOW
        if line == NAME_PROMPT:
            self._password_pending = False  # the password, if any, was taken
            return Step.SEND_NAME if self.refusal is None else Step.ASK_ANOTHER_NAME
        return Step.SHOW

    def rename(self, name: str) -> None:
        """Take the name to offer next, after a refusal."""
        self.name = name.strip()
        self.refusal = None


class Me:
    """You, as the server knows you once joined: your name, and whether you said ``/quit``.

    It follows the server's rules for a line: ``/command ...`` is for the server, and the others
    see nothing of it but a ``/me`` action; ``//text`` is a message starting with "/"; the rest
    are messages.

    >>> me = Me("alice")
    >>> me.echo("hi", "14:03")
    '[14:03] <alice> hi'
    >>> me.echo("/me waves", "14:03")
    '[14:03] * alice waves'
    >>> me.echo("//etc/hosts", "14:03")
    '[14:03] <alice> /etc/hosts'
    >>> me.echo("/who", "14:03") is None
    True
    >>> me.heard("[14:04] *** alice is now known as al")
    >>> me.name
    'al'
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.quitting = False

    def echo(self, line: str, stamp: str) -> Optional[str]:
        """``line`` as the others see it once sent, or None if they will not see it."""
        if len(line.encode(ENCODING)) > MAX_LINE_BYTES:
            return None  # the server refuses it and tells you so
        command = split_command(line)
        if command is None:
            return render_message(stamp, self.name, message_text(line))
        name, argument = command
        if name == "me" and argument:
            return render_action(stamp, self.name, argument)
        return None

    def sent(self, line: str) -> None:
        """Note a line on its way to the server: after ``/quit`` its closing is expected."""
        command = split_command(line)
        if command is not None and command[0] == "quit":
            self.quitting = True

    def heard(self, line: str) -> None:
        """Follow your own ``/nick``, from the notice the server sends your room and you."""
        parsed = parse_line(line)
        renamed = parse_rename(parsed.text) if parsed.kind == LINE_NOTICE else None
        if renamed and renamed[0] == self.name:
            self.name = renamed[1]


def outgoing_lines(typed: str) -> list[str]:
    """The lines to send for what was typed or piped: cleaned as the server would, blanks left out.

    >>> outgoing_lines("hi\\tthere\\n\\n   \\nbye\\x1b[2J")
    ['hi there', 'bye']
    """
    lines = (clean_text(line) for line in typed.splitlines())
    return [line for line in lines if line.strip()]


# -- bytes and sockets --------------------------------------------------------------------

class LineReader:
    """Whole lines from a byte source such as a socket's ``recv`` or a pipe's ``read1``.

    Framing, decoding and cleaning are ``buffer``'s (a :class:`~groupchat.protocol.LineBuffer`);
    this keeps the lines one read produced until they are asked for.

    >>> chunks = iter([b"hi\\nthe", b"re\\nlast"])
    >>> lines = LineReader(lambda size: next(chunks, b""))
    >>> [lines.read_line() for _ in range(4)]
    ['hi', 'there', 'last', None]
    """

    def __init__(self, read: Callable[[int], bytes], buffer: Optional[LineBuffer] = None) -> None:
        self._read = read
        self._buffer = buffer or LineBuffer()
        self._lines: deque[Line] = deque()

    def read_line(self) -> Optional[Line]:
        """The next line, or None once the source has ended; raises what ``read`` and ``feed`` raise."""
        while not self._lines:
            data = self._read(READ_BYTES)
            if not data:
                if not self._buffer.pending:
                    return None
                data = b"\n"  # the source ended mid-line: that last line still counts
            self._lines.extend(self._buffer.feed(data))
        return self._lines.popleft()


Connection = Union[socket.socket, TLSConnection]


def connect(host: str, port: int, tls: Optional[ssl.SSLContext] = None) -> Connection:
    """A connection to the server (IPv4 or IPv6; TLS with ``tls``), or a :class:`ConnectError` saying why.

    It keeps :data:`CONNECT_TIMEOUT_SECONDS` as its timeout, for the TLS and name handshakes.
    """
    address = format_address((host, port))
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS)
    except ConnectionRefusedError as exc:
        raise ConnectError(f"connection refused: is a server running on {address}?") from exc
    except socket.gaierror as exc:
        raise ConnectError(f"unknown host {host} ({exc.strerror})") from exc
    except OSError as exc:  # unreachable, timed out, ...
        raise ConnectError(f"cannot reach {address}: {_why(exc)}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return sock
    try:
        return TLSConnection(sock, tls, server_hostname=host)
    except OSError as exc:  # ssl.SSLError is one
        sock.close()
        raise ConnectError(f"TLS with {address} failed: {_tls_failure(exc)}") from exc


def _tls_failure(exc: OSError) -> str:
    """Why the TLS handshake failed, and what to try."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"certificate verify failed: {describe_tls_error(exc)} "
                "(use --cafile FILE to trust its CA, or --insecure)")
    if isinstance(exc, socket.timeout):
        why = f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    else:
        why = describe_tls_error(exc)
    if "alert" in why:  # the server's own TLS complained (a version or cipher it will not use)
        return why
    return f"{why}: is it serving TLS?"


class ServerReader(threading.Thread):
    """Shows each line the server sends until the connection ends, then records why and calls ``on_end``.

    ``end`` is None while the connection lasts, then the :class:`ConnectionLostError` to raise
    if nobody meant it to end; whoever started the reader knows whether somebody did.
    """

    def __init__(self, lines: LineReader, show: Callable[[str], None],
                 on_end: Callable[[ConnectionLostError], None]) -> None:
        super().__init__(name="server-reader", daemon=True)
        self._lines = lines
        self._show = show
        self._on_end = on_end
        self.end: Optional[ConnectionLostError] = None

    def run(self) -> None:
        try:
            while (line := self._lines.read_line()) is not None:
                self._show(_displayed(line))
            self.end = _lost()
        except OSError as exc:
            self.end = _lost(exc)
        except NoNewlineError as exc:
            self.end = ConnectionLostError(f"the server {exc}")
        self._on_end(self.end)


class StdinSender(threading.Thread):
    """Sends piped input's lines in order, then half-closes so the server sees EOF after the last.

    ``sent_all`` turns true just before the half-close, so a close the server makes in answer
    counts as expected; ``error`` is what stopped the sending early, if anything did.
    """

    def __init__(self, lines: LineReader, sock: Connection, me: Me, on_end: Callable[[], None]) -> None:
        super().__init__(name="stdin-sender", daemon=True)
        self._lines = lines
        self._sock = sock
        self._me = me
        self._on_end = on_end
        self.sent_all = False
        self.error: Optional[OSError] = None

    def run(self) -> None:
        try:
            while (line := self._lines.read_line()) is not None:
                if isinstance(line, LineTooLong):
                    print(f"groupchat: a line longer than {line.limit} bytes was not sent", file=sys.stderr)
                    continue
                for text in outgoing_lines(line):
                    self._me.sent(text)
                    self._sock.sendall(encode_line(text))
            self.sent_all = True
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.error = exc
        self._on_end()


# -- the client ------------------------------------------------------------------------------

def run_client(*, host: str, port: int, name: str, password: Optional[str] = None,
               tls: Optional[ssl.SSLContext] = None, bell: bool = True,
               stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None) -> int:
    """Chat at ``host`` ``port`` as ``name`` until the person leaves, or piped input ends; return 0.

    ``password`` answers a server that asks for one; without it a person at a terminal is asked.
    ``tls`` is the context to connect with TLS (see :func:`groupchat.tls.client_context`).
    At a terminal lines are coloured, unless stdout is not one or ``NO_COLOR`` is set, and
    with ``bell`` a mention or a private message rings it; piped, lines are printed as they came.
    Raises :class:`~groupchat.errors.ConnectError` when it cannot connect (or no password can be
    given, or the password is refused), :class:`~groupchat.errors.NameRefusedError` when the
    name is refused and stdin is not a terminal to ask for another, and
    :class:`~groupchat.errors.ConnectionLostError` when the server goes away.  ``stdin`` and
    ``stdout`` default to the process's; when ``stdin`` is a terminal, prompt_toolkit reads the
    process's terminal, else ``stdin.buffer`` is read.
    """
    stdin = sys.stdin if stdin is None else stdin
    # With file=None, print looks up sys.stdout each time: patch_stdout's proxy while prompting.
    show = functools.partial(print, file=stdout, flush=True)
    at_terminal = stdin.isatty()
    to_terminal = at_terminal and (sys.stdout if stdout is None else stdout).isatty()
    transcript = Transcript(show, Painter(colour=to_terminal and colour_allowed(os.environ),
                                          bell=to_terminal and bell))
    try:
        with connect(host, port, tls) as sock:
            show(f"Connected to server at ({host}, {port})")
            lines = LineReader(sock.recv, LineBuffer(MAX_SERVER_LINE_BYTES, collapse_blanks=False))
            ask = _ask_person if at_terminal else None
            me = Me(_run_handshake(sock, lines, Handshake(name), transcript, ask, password,
                                   tls=tls is not None))
            if at_terminal:
                _chat_at_terminal(sock, lines, me, transcript)
            else:
                _chat_from_pipe(sock, lines, me, transcript.show, stdin)
    except (EOFError, KeyboardInterrupt):
        pass  # Ctrl-D or Ctrl-C: the person chose to leave
    return 0


class Transcript:
    """What the person sees: each line painted for the terminal, and the names in it noted for Tab."""

    def __init__(self, show: Callable[[str], None], painter: Painter) -> None:
        self.show = show
        self.painter = painter
        self.names = KnownNames()

    def line(self, line: str, me: str) -> None:
        """Show a line from the server, or one of yours as the others see it, to ``me``."""
        self.names.heard(line)
        self.show(self.painter.paint(line, me))


def _chat_at_terminal(sock: Connection, lines: LineReader, me: Me, transcript: Transcript) -> None:
    """A prompt in this thread sends what is typed; the server's lines are printed above it."""
    session: PromptSession[str] = PromptSession(
        erase_when_done=True, history=InMemoryHistory(), completer=ChatCompleter(transcript.names),
        complete_while_typing=False)  # Tab completes; a menu popping up mid-sentence would not help
    app = session.app

    def hear(line: str) -> None:
        me.heard(line)
        transcript.line(line, me.name)

    # raw: the colours' escape codes pass through; the server's text was cleaned of any of its own.
    interrupt = functools.partial(_interrupt_prompt, app)
    with patch_stdout(raw=True), _reading(sock, lines, hear, interrupt) as reader:
        while True:
            try:
                typed = session.prompt(PROMPT, pre_run=lambda: _end_prompt(app, reader.end))
            except ConnectionLostError:
                if me.quitting:
                    return
                raise
            for line in outgoing_lines(typed):
                me.sent(line)
                _send(sock, line)
                echo = me.echo(line, time.strftime(STAMP_FORMAT))
                if echo is not None:
                    transcript.line(echo, me.name)


def _chat_from_pipe(sock: Connection, lines: LineReader, me: Me, show: Callable[[str], None],
                    stdin: TextIO) -> None:
    """Send the piped lines; after the last, wait (bounded) for the server to close."""
    ended = threading.Event()  # set by whichever thread finishes first, and by the other
    with _reading(sock, lines, show, lambda end: ended.set()) as reader:
        # Piped input may hold lines too long to send; they are skipped, whatever their length.
        piped_lines = LineReader(stdin.buffer.read1, LineBuffer(max_unterminated=sys.maxsize))
        sender = StdinSender(piped_lines, sock, me, ended.set)
        sender.start()
        ended.wait()
        if not (sender.sent_all or me.quitting):
            raise reader.end or _lost(sender.error)
        reader.join(DRAIN_TIMEOUT_SECONDS)


def _run_handshake(sock: Connection, lines: LineReader, handshake: Handshake, transcript: Transcript,
                   ask: Optional[Callable[[str, bool], str]], password: Optional[str], tls: bool) -> str:
    """Run the handshake; return the name the server accepted.

    ``ask(question, secret)`` asks the person at the terminal.  Without it (no terminal) a
    refused name raises :class:`NameRefusedError`, and a password asked for and not given
    :class:`ConnectError`.  A refused password is a :class:`ConnectError` either way.
    """
    given = password is not None  # by the caller, not typed at the terminal
    while True:
        line = _handshake_line(lines, handshake, tls)
        step = handshake.feed(line)
        if step is Step.SEND_PASSWORD:
            if password is None:
                if ask is None:
                    raise ConnectError("the server wants a password, and stdin is not a terminal "
                                       "to ask for it")
                password = ask(ASK_PASSWORD, True)
            _send(sock, password)
        elif step is Step.PASSWORD_REFUSED:
            transcript.line(_displayed(line), handshake.name)
            raise ConnectError("the server refused the password" +
                               (f" (from --password-file or {PASSWORD_ENV})" if given else ""))
        elif step is Step.SEND_NAME:
            _send(sock, handshake.name)
        elif step is Step.ASK_ANOTHER_NAME:
            if ask is None:
                raise NameRefusedError(f'the server refused the name "{handshake.name}": '
                                       f"{handshake.refusal}; choose another with --name")
            handshake.rename(ask(ASK_NAME, False))
            _send(sock, handshake.name)
        else:
            transcript.line(_displayed(line), handshake.name)
            if step is Step.JOINED:
                sock.settimeout(None)
                return handshake.name


def _handshake_line(lines: LineReader, handshake: Handshake, tls: bool) -> Line:
    try:
        line = lines.read_line()
    except socket.timeout as exc:
        # A TLS server says nothing until it hears TLS: a plain client just waits.
        hint = "" if tls else " (one that serves TLS needs --tls)"
        raise ConnectError(f"the server sent no answer within {CONNECT_TIMEOUT_SECONDS:g} s: "
                           f"is it a groupchat server{hint}?") from exc
    except OSError as exc:
        raise _lost(exc) from exc
    except NoNewlineError as exc:
        raise ConnectError(f"the server {exc}: is it a groupchat server?") from exc
    if line is None:
        why = f": {handshake.refusal}" if handshake.refusal else ""
        raise ConnectionLostError(f"the server closed the connection before letting you in{why}")
    return line


@contextmanager
def _reading(sock: Connection, lines: LineReader, show: Callable[[str], None],
             on_end: Callable[[ConnectionLostError], None]) -> Iterator[ServerReader]:
    """Run a :class:`ServerReader` for the body; then shut the socket, which ends it, and wait for it."""
    reader = ServerReader(lines, show, on_end)
    reader.start()
    try:
        yield reader
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv whoever ended the chat
        except OSError:
            pass  # the connection is already gone
        reader.join(STOP_TIMEOUT_SECONDS)


def _ask_person(question: str, secret: bool) -> str:
    """Ask at the terminal, in a prompt of its own so that no password enters the chat's history."""
    return prompt(question, is_password=secret)


def _interrupt_prompt(app: Application[str], end: ConnectionLostError) -> None:
    """From the reader thread: make the running prompt raise ``end``.

    When no prompt is running at this instant, the next one's ``pre_run`` (:func:`_end_prompt`)
    sees ``reader.end`` instead, so the input loop never waits on a connection that is gone.
    """
    loop = app.loop
    if loop is not None:
        try:
            loop.call_soon_threadsafe(_end_prompt, app, end)
        except RuntimeError:  # that prompt has just finished and closed its loop
            pass


def _end_prompt(app: Application[str], end: Optional[ConnectionLostError]) -> None:
    """In the prompt's event loop: end the prompt with ``end``, if there is one and it still runs."""
    if end is not None and app.is_running and not app.is_done:
        app.exit(exception=end)


def _send(sock: Connection, line: str) -> None:
    try:
        sock.sendall(encode_line(line))
    except OSError as exc:
        raise _lost(exc) from exc


def _displayed(line: Line) -> str:
    if isinstance(line, LineTooLong):
        return f"(a line longer than {line.limit} bytes from the server was left out)"
    return line


def _lost(exc: Optional[OSError] = None) -> ConnectionLostError:
    """The error for a connection that ended: closed by the server (no ``exc``), or broken."""
    if exc is None:
        return ConnectionLostError("the server closed the connection")
    return ConnectionLostError(f"lost the connection to the server: {_why(exc)}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
