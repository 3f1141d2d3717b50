"""The ``groupchat join`` client: a reader thread shows what the server sends, the input loop sends.

It answers the server's greeting by switching the connection to JSON Lines
(:mod:`groupchat.jsonl`), so the client reads the server's events, never its sentences:
:class:`~groupchat.client.session.Session` follows them (your name, your room, the last id
seen in each room, the answers to what you sent), and for a person
:class:`~groupchat.client.view.View` renders each into the line a text connection gets.

With stdin a terminal the input loop is a prompt_toolkit prompt in the main thread, and incoming
lines are printed above it (``patch_stdout``) so they never garble a half-typed line.  Each line
you send goes as a labeled operation, and is shown as the others see it once the server
acknowledges it.  With stdin a pipe or a file, its lines are sent as they come; at its end the
client waits until the server has answered every one (while answers keep coming), says
``/quit``, and prints what still arrives until the server closes.  With ``json_events``
(``join --json``) it does the same for a program: the events go to stdout as they come, one
JSON object a line, and a piped line that is a JSON object is sent as it is.

At a terminal, lines are coloured (:mod:`groupchat.client.colours`) unless stdout is not a terminal
or ``NO_COLOR`` is set, a mention or a private message rings the bell, Tab completes commands
and names (:mod:`groupchat.client.completion`) and the up arrow recalls your earlier lines.
Over TLS the two threads share the connection through a :class:`TLSConnection`.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import ssl
import sys
import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TextIO, Union

from prompt_toolkit import PromptSession, prompt
from prompt_toolkit.application import Application
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from groupchat import jsonl
from groupchat.client.colours import Painter, colour_allowed
from groupchat.client.completion import ChatCompleter, KnownNames
from groupchat.client.session import Handshake, Heard, Sent, Session, Step, kept_back
from groupchat.client.view import Shown, View, clean_event
from groupchat.errors import ConnectError, ConnectionLostError, NameRefusedError, NoNewlineError
from groupchat.net import format_address
from groupchat.passwords import PASSWORD_ENV
from groupchat.protocol import LINE_HANDSHAKE, MAX_LINE_BYTES, LineBuffer, LineTooLong, clean_text, encode_line
from groupchat.tls import TLSConnection, describe_tls_error

# For connecting, and then for each answer during the handshake: a port that is not a
# groupchat server (it never asks for a name) fails instead of hanging.
CONNECT_TIMEOUT_SECONDS = 10.0
# Piped input, after its last line: how long the server may go without answering any of the
# lines still unanswered before the client gives up on them, and then how long to wait for
# the server to close after /quit, printing what comes.
ANSWER_TIMEOUT_SECONDS = 10.0
DRAIN_TIMEOUT_SECONDS = 5.0
# How long to wait for the reader thread once its socket is shut down (it ends at once).
STOP_TIMEOUT_SECONDS = 1.0
READ_BYTES = 64 * 1024
# Longest line taken from the server: a relayed message (MAX_LINE_BYTES, or what a server's
# --max-line allows) as a JSON event, or the answer to /who, which names everyone in the room.
MAX_SERVER_LINE_BYTES = 256 * MAX_LINE_BYTES
SWITCH_TO_JSON = encode_line(f"/mode {jsonl.MODE_JSON}")
QUIT = encode_line("/quit")
PROMPT = "> "
ASK_NAME = "Name: "
ASK_PASSWORD = "Password: "

Line = Union[str, LineTooLong]


def outgoing_lines(typed: str) -> list[str]:
    """The lines to send for what was typed or piped: cleaned as the server would, blanks left out.

    >>> outgoing_lines("hi\\tthere\\n\\n   \\nbye\\x1b[2J")
    ['hi there', 'bye']
    """
    lines = (clean_text(line) for line in typed.splitlines())
    return [line for line in lines if line.strip()]


def parsed(line: Line) -> Heard:
    """What a line from the server is: an event, or text (sent before it read the switch to JSON).

    >>> parsed('{"v":1,"type":"mode","mode":"json"}')["type"], parsed("*** What is your name?")
    ('mode', '*** What is your name?')
    """
    if isinstance(line, LineTooLong):
        return line
    try:
        return jsonl.parse_event(line)
    except ValueError:
        return line


# -- where what the server sends goes ---------------------------------------------------------

class Output:
    """Takes what the server sends: the session follows it, then :meth:`present` shows it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def take(self, line: Heard) -> None:
        answered = self.session.heard(line) if isinstance(line, dict) else None
        self.present(line, answered)

    def present(self, line: Heard, answered: Optional[Sent]) -> None:
        raise NotImplementedError


class Transcript(Output):
    """For a person: each event as text mode shows it, painted for the terminal; names noted for Tab."""

    def __init__(self, session: Session, show: Callable[[str], None], painter: Painter) -> None:
        super().__init__(session)
        self.show = show
        self.painter = painter
        self.view = View(session)
        self.names = KnownNames()

    def present(self, line: Heard, answered: Optional[Sent]) -> None:
        if isinstance(line, LineTooLong):
            shown = [Shown(LINE_HANDSHAKE, f"(a line longer than {line.limit} bytes from the server was left out)")]
        elif isinstance(line, str):
            shown = [Shown(LINE_HANDSHAKE, line)]
        else:
            self.names.heard(line)
            shown = self.view.lines(line, answered)
        for one in shown:
            self.show(self.painter.paint(one, self.session.name))

    def note(self, text: str) -> None:
        """A notice from the client itself."""
        self.show(self.painter.paint(self.view.notice(text), self.session.name))


class EventLog(Output):
    """For a program (``join --json``): each event on stdout, one JSON object a line, and nothing
    else there; what is not an event is told on stderr.  Strings are cleaned as a person's lines
    are, so stdout can go to a terminal too."""

    def __init__(self, session: Session, stdout: Optional[TextIO]) -> None:
        super().__init__(session)
        self.stdout = stdout

    def present(self, line: Heard, answered: Optional[Sent]) -> None:
        if isinstance(line, dict):
            print(json.dumps(clean_event(line), ensure_ascii=False, separators=(",", ":")),
                  file=self.stdout, flush=True)
        elif isinstance(line, LineTooLong):
            _warn(f"a line longer than {line.limit} bytes from the server was left out")
        else:
            _warn(f"the server said: {line}")


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
    """Hands each line the server sends to ``output`` until the connection ends, then records why
    and calls ``on_end``.

    ``end`` is None while the connection lasts, then the :class:`ConnectionLostError` to raise
    if nobody meant it to end; whoever started the reader knows whether somebody did.
    """

    def __init__(self, lines: LineReader, output: Output,
                 on_end: Callable[[ConnectionLostError], None]) -> None:
        super().__init__(name="server-reader", daemon=True)
        self._lines = lines
        self._output = output
        self._on_end = on_end
        self.end: Optional[ConnectionLostError] = None

    def run(self) -> None:
        try:
            while (line := self._lines.read_line()) is not None:
                self._output.take(parsed(line))
            self.end = _lost()
        except OSError as exc:
            self.end = _lost(exc)
        except NoNewlineError as exc:
            self.end = ConnectionLostError(f"the server {exc}")
        self._output.session.labels.close()  # no answer comes now: stop waiting for one
        self._on_end(self.end)


class StdinSender(threading.Thread):
    """Sends piped input's lines in order, each as ``encode`` makes it, then calls ``on_end``.

    ``sent_all`` turns true once the input has ended and all of it was sent; ``error`` is what
    stopped the sending early, if anything did.
    """

    def __init__(self, lines: LineReader, sock: Connection, encode: Callable[[str], bytes],
                 on_end: Callable[[], None]) -> None:
        super().__init__(name="stdin-sender", daemon=True)
        self._lines = lines
        self._sock = sock
        self._encode = encode
        self._on_end = on_end
        self.sent_all = False
        self.error: Optional[OSError] = None

    def run(self) -> None:
        try:
            while (line := self._lines.read_line()) is not None:
                if isinstance(line, LineTooLong):
                    _warn(f"a line longer than {line.limit} bytes was not sent")
                    continue
                for text in outgoing_lines(line):
                    why = kept_back(text)
                    if why is None:
                        self._sock.sendall(self._encode(text))
                    else:
                        _warn(f"{why}: {text}")
            self.sent_all = True
        except OSError as exc:
            self.error = exc
        self._on_end()


# -- the client ------------------------------------------------------------------------------

def run_client(*, host: str, port: int, name: str, password: Optional[str] = None,
               tls: Optional[ssl.SSLContext] = None, bell: bool = True, json_events: bool = False,
               stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None) -> int:
    """Chat at ``host`` ``port`` as ``name`` until the person leaves, or piped input ends; return 0.

    ``password`` answers a server that asks for one; without it a person at a terminal is asked.
    ``tls`` is the context to connect with TLS (see :func:`groupchat.tls.client_context`).
    At a terminal lines are coloured, unless stdout is not one or ``NO_COLOR`` is set, and
    with ``bell`` a mention or a private message rings it; piped, lines are printed plain.
    With ``json_events`` stdout gets the server's events, one JSON object a line, and stdin is
    read as piped input whatever it is.
    Raises :class:`~groupchat.errors.ConnectError` when it cannot connect (or no password can be
    given, or the password is refused), :class:`~groupchat.errors.NameRefusedError` when the
    name is refused and stdin is not a terminal to ask for another, and
    :class:`~groupchat.errors.ConnectionLostError` when the server goes away (or, piped, leaves
    lines unanswered).  ``stdin`` and ``stdout`` default to the process's; when ``stdin`` is a
    terminal, prompt_toolkit reads the process's terminal, else ``stdin.buffer`` is read.
    """
    stdin = sys.stdin if stdin is None else stdin
    # With file=None, print looks up sys.stdout each time: patch_stdout's proxy while prompting.
    show = functools.partial(print, file=stdout, flush=True)
    at_terminal = stdin.isatty() and not json_events
    to_terminal = at_terminal and (sys.stdout if stdout is None else stdout).isatty()
    session = Session(name)
    transcript = None if json_events else Transcript(
        session, show, Painter(colour=to_terminal and colour_allowed(os.environ), bell=to_terminal and bell))
    output = transcript or EventLog(session, stdout)
    try:
        with connect(host, port, tls) as sock:
            if not json_events:
                show(f"Connected to server at ({host}, {port})")
            lines = LineReader(sock.recv, LineBuffer(MAX_SERVER_LINE_BYTES, collapse_blanks=False))
            ask = _ask_person if at_terminal else None
            _run_handshake(sock, lines, Handshake(name), output, ask, password, tls=tls is not None)
            if transcript is not None and at_terminal:
                _chat_at_terminal(sock, lines, transcript)
            else:
                _chat_from_pipe(sock, lines, output, stdin, json_events)
    except (EOFError, KeyboardInterrupt):
        pass  # Ctrl-D or Ctrl-C while asked for a name or password: the person chose to leave
    return 0


def _chat_at_terminal(sock: Connection, lines: LineReader, transcript: Transcript) -> None:
    """A prompt in this thread sends what is typed; the server's lines are printed above it."""
    prompter: PromptSession[str] = PromptSession(
        erase_when_done=True, history=InMemoryHistory(), completer=ChatCompleter(transcript.names),
        complete_while_typing=False)  # Tab completes; a menu popping up mid-sentence would not help
    app = prompter.app
    # raw: the colours' escape codes pass through; the server's text was cleaned of any of its own.
    interrupt = functools.partial(_interrupt_prompt, app)
    with patch_stdout(raw=True), _reading(sock, lines, transcript, interrupt) as reader:
        while True:
            try:
                typed = prompter.prompt(PROMPT, pre_run=lambda: _end_prompt(app, reader.end))
            except ConnectionLostError:
                if transcript.session.quitting:
                    return
                raise
            except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C: the person chose to leave
                try:
                    sock.sendall(QUIT)  # so the server ends the session, not holds it for a return
                except OSError:
                    pass  # the connection is gone already
                return
            for line in outgoing_lines(typed):
                why = kept_back(line)
                if why is None:
                    _send(sock, transcript.session.op_line(line))
                else:
                    transcript.note(why)


def _chat_from_pipe(sock: Connection, lines: LineReader, output: Output, stdin: TextIO,
                    json_events: bool) -> None:
    """Send the piped lines; after the last, wait (bounded) for their answers, then /quit and
    wait (bounded) for the server to close."""
    session = output.session
    ended = threading.Event()  # set by whichever thread finishes first, and by the other
    with _reading(sock, lines, output, lambda end: ended.set()) as reader:
        # Piped input may hold lines too long to send; they are skipped, whatever their length.
        piped_lines = LineReader(stdin.buffer.read1, LineBuffer(max_unterminated=sys.maxsize))
        sender = StdinSender(piped_lines, sock, session.program_line if json_events else session.op_line,
                             ended.set)
        sender.start()
        ended.wait()
        unanswered = session.labels.wait(ANSWER_TIMEOUT_SECONDS) if sender.sent_all else 0
        if reader.end is not None or not sender.sent_all:
            if session.quitting:
                return
            raise reader.end or _lost(sender.error)
        _send(sock, QUIT)
        reader.join(DRAIN_TIMEOUT_SECONDS)
        if unanswered:
            raise ConnectionLostError(f"the server left {unanswered} of your lines unanswered for "
                                      f"{ANSWER_TIMEOUT_SECONDS:g} s")


def _run_handshake(sock: Connection, lines: LineReader, handshake: Handshake, output: Output,
                   ask: Optional[Callable[[str, bool], str]], password: Optional[str], tls: bool) -> None:
    """Run the handshake until the server lets you in.

    ``ask(question, secret)`` asks the person at the terminal.  Without it (no terminal) a
    refused name raises :class:`NameRefusedError`, and a password asked for and not given
    :class:`ConnectError`.  A refused password is a :class:`ConnectError` either way.
    """
    given = password is not None  # by the caller, not typed at the terminal
    while True:
        line = parsed(_handshake_line(lines, handshake, tls))
        step = handshake.feed(line)
        if step is not Step.SWITCH:  # the greeting in text is asked again as an event
            output.take(line)
        if step is Step.SWITCH:
            _send(sock, SWITCH_TO_JSON)
        elif step is Step.NO_JSON:
            raise ConnectError("the server has no JSON mode, which this client needs: "
                               "is it an older groupchat server?")
        elif step is Step.SEND_PASSWORD:
            if password is None:
                if ask is None:
                    raise ConnectError("the server wants a password, and stdin is not a terminal "
                                       "to ask for it")
                password = ask(ASK_PASSWORD, True)
            _send(sock, encode_line(password))
        elif step is Step.PASSWORD_REFUSED:
            raise ConnectError("the server refused the password" +
                               (f" (from --password-file or {PASSWORD_ENV})" if given else ""))
        elif step is Step.SEND_NAME:
            _send(sock, encode_line(handshake.name))
        elif step is Step.ASK_ANOTHER_NAME:
            if ask is None:
                raise NameRefusedError(f'the server refused the name "{handshake.name}": '
                                       f"{handshake.refusal}; choose another with --name")
            handshake.rename(ask(ASK_NAME, False))
            _send(sock, encode_line(handshake.name))
        elif step is Step.JOINED:
            sock.settimeout(None)
            return


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
def _reading(sock: Connection, lines: LineReader, output: Output,
             on_end: Callable[[ConnectionLostError], None]) -> Iterator[ServerReader]:
    """Run a :class:`ServerReader` for the body; then shut the socket, which ends it, and wait for it."""
    reader = ServerReader(lines, output, on_end)
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


def _send(sock: Connection, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise _lost(exc) from exc


def _warn(text: str) -> None:
    """A diagnostic for whoever runs the client, on stderr (stdout may be a program's)."""
    print(f"groupchat: {text}", file=sys.stderr, flush=True)


def _lost(exc: Optional[OSError] = None) -> ConnectionLostError:
    """The error for a connection that ended: closed by the server (no ``exc``), or broken."""
    if exc is None:
        return ConnectionLostError("the server closed the connection")
    return ConnectionLostError(f"lost the connection to the server: {_why(exc)}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
