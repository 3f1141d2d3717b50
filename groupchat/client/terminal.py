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
The connection itself, the handshake and reconnecting are :mod:`groupchat.client.link`'s.
Over TLS the two threads share the connection through a
:class:`~groupchat.tls.TLSConnection`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import ssl
import sys
import threading
from typing import Callable, Optional, Sequence, TextIO

from prompt_toolkit import PromptSession, prompt
from prompt_toolkit.application import Application
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.patch_stdout import patch_stdout

from groupchat.client.colours import Painter, colour_allowed
from groupchat.client.completion import ChatCompleter, KnownNames, KnownRooms
from groupchat.client.link import QUIT, LineReader, Link, Output
from groupchat.client.session import Handshake, Heard, Sent, Session, kept_back
from groupchat.client.view import Shown, View, clean_event
from groupchat.errors import ConnectionLostError, GroupchatError
from groupchat.protocol import LINE_HANDSHAKE, LineBuffer, LineTooLong, clean_text

# Piped input, after its last line: how long the server may go without answering any of the
# lines still unanswered before the client gives up on them, and then how long to wait for
# the server to close after /quit, printing what comes.
ANSWER_TIMEOUT_SECONDS = 10.0
DRAIN_TIMEOUT_SECONDS = 5.0
PROMPT = "> "


def outgoing_lines(typed: str) -> list[str]:
    """The lines to send for what was typed or piped: cleaned as the server would, blanks left out.

    >>> outgoing_lines("hi\\tthere\\n\\n   \\nbye\\x1b[2J")
    ['hi there', 'bye']
    """
    lines = (clean_text(line) for line in typed.splitlines())
    return [line for line in lines if line.strip()]


# -- where what the server sends goes ---------------------------------------------------------

class Transcript(Output):
    """For a person: each event as text mode shows it, painted for the terminal; names noted for Tab."""

    def __init__(self, session: Session, show: Callable[[str], None], painter: Painter) -> None:
        super().__init__(session)
        self.show = show
        self.painter = painter
        self.view = View(session)
        self.names = KnownNames()
        self.rooms = KnownRooms()

    def present(self, line: Heard, answered: Optional[Sent]) -> None:
        if isinstance(line, LineTooLong):
            shown = [Shown(LINE_HANDSHAKE, f"(a line longer than {line.limit} bytes from the server was left out)")]
        elif isinstance(line, str):
            shown = [Shown(LINE_HANDSHAKE, line)]
        else:
            self.names.heard(line)
            self.rooms.heard(line)
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

    def note(self, text: str) -> None:
        _warn(text)


class StatusLine:
    """The prompt's first line while the link has something to say (reconnecting), redrawn in
    place as that changes; what is typed on the line under it stays."""

    def __init__(self, app: Application[str]) -> None:
        self._app = app
        self.text: Optional[str] = None

    def set(self, text: Optional[str]) -> None:
        """From the link's thread: show ``text``, or no status line."""
        self.text = text
        self._app.invalidate()

    def message(self) -> str:
        return PROMPT if self.text is None else f"{self.text}\n{PROMPT}"


class StdinSender(threading.Thread):
    """Sends piped input's lines in order, each as ``encode`` makes it, then calls ``on_end``.

    ``sent_all`` turns true once the input has ended and all of it was sent; ``error`` is what
    stopped the sending early, if anything did.
    """

    def __init__(self, lines: LineReader, send: Callable[[bytes], None], encode: Callable[[str], bytes],
                 on_end: Callable[[], None]) -> None:
        super().__init__(name="stdin-sender", daemon=True)
        self._lines = lines
        self._send = send
        self._encode = encode
        self._on_end = on_end
        self.sent_all = False
        self.error: Optional[GroupchatError] = None

    def run(self) -> None:
        try:
            while (line := self._lines.read_line()) is not None:
                if isinstance(line, LineTooLong):
                    _warn(f"a line longer than {line.limit} bytes was not sent")
                    continue
                for text in outgoing_lines(line):
                    why = kept_back(text)
                    if why is None:
                        self._send(self._encode(text))
                    else:
                        _warn(f"{why}: {text}")
            self.sent_all = True
        except GroupchatError as exc:  # the connection ended
            self.error = exc
        self._on_end()


# -- the client ------------------------------------------------------------------------------

def run_client(*, addresses: Sequence[tuple[str, int]], name: str, password: Optional[str] = None,
               tls: Optional[ssl.SSLContext] = None, bell: bool = True, json_events: bool = False,
               reconnect: bool = True, stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None) -> int:
    """Chat as ``name`` at the first of ``addresses`` (host, port: the servers of one chat) that
    answers, until the person leaves, or piped input ends; return 0.

    ``password`` answers a server that asks for one; without it a person at a terminal is asked.
    ``tls`` is the context to connect with TLS (see :func:`groupchat.tls.client_context`).
    At a terminal lines are coloured, unless stdout is not one or ``NO_COLOR`` is set, and
    with ``bell`` a mention or a private message rings it; piped, lines are printed plain.
    At a terminal, with ``reconnect``, a connection that drops is made again (see
    :class:`~groupchat.client.link.Link`); piped input and ``json_events`` end with it.
    With ``json_events`` stdout gets the server's events, one JSON object a line, and stdin is
    read as piped input whatever it is.
    Raises :class:`~groupchat.errors.ConnectError` when it cannot connect (or no password can be
    given, or the password is refused), :class:`~groupchat.errors.NameRefusedError` when the
    name is refused and stdin is not a terminal to ask for another, and
    :class:`~groupchat.errors.ConnectionLostError` when the server goes away for good (or,
    piped, leaves lines unanswered).  ``stdin`` and ``stdout`` default to the process's; when
    ``stdin`` is a terminal, prompt_toolkit reads the process's terminal, else ``stdin.buffer`` is read.
    """
    stdin = sys.stdin if stdin is None else stdin
    # With file=None, print looks up sys.stdout each time: patch_stdout's proxy while prompting.
    show = functools.partial(print, file=stdout, flush=True)
    at_terminal = stdin.isatty() and not json_events
    to_terminal = at_terminal and (sys.stdout if stdout is None else stdout).isatty()
    session = Session(name)
    transcript = None if json_events else Transcript(
        session, show, Painter(colour=to_terminal and colour_allowed(os.environ), bell=to_terminal and bell,
                               width=_columns if to_terminal else None))
    output = transcript or EventLog(session, stdout)
    link = Link(addresses=addresses, tls=tls, output=output, password=password,
                reconnect=reconnect and at_terminal)
    try:
        link.open(Handshake(name), ask=_ask_person if at_terminal else None,
                  connected=None if json_events else show)
        if transcript is not None and at_terminal:
            _chat_at_terminal(link, transcript)
        else:
            _chat_from_pipe(link, stdin, json_events)
    except (EOFError, KeyboardInterrupt):
        pass  # Ctrl-D or Ctrl-C while asked for a name or password: the person chose to leave
    finally:
        link.close(quit=False)
    return 0


def _chat_at_terminal(link: Link, transcript: Transcript) -> None:
    """A prompt in this thread sends what is typed; the server's lines are printed above it, and
    while the connection is down a status line under it says when the next attempt is."""
    prompter: PromptSession[str] = PromptSession(
        erase_when_done=True, history=InMemoryHistory(), completer=ChatCompleter(transcript.names, transcript.rooms),
        complete_while_typing=False,  # Tab completes; a menu popping up mid-sentence would not help
        key_bindings=_CHAT_KEYS)
    app = prompter.app
    status = StatusLine(app)
    link.status = status.set
    # raw: the colours' escape codes pass through; the server's text was cleaned of any of its own.
    with patch_stdout(raw=True):
        link.start(functools.partial(_interrupt_prompt, app))
        while True:
            try:
                typed = prompter.prompt(status.message, pre_run=lambda: _end_prompt(app, link.end))
            except ConnectionLostError:
                if transcript.session.quitting:
                    return
                raise
            except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C: the person chose to leave
                link.close()  # says /quit, so the server ends the session, not holds it for a return
                return
            for line in outgoing_lines(typed):
                why = kept_back(line)
                if why is None:
                    link.send(line)
                else:
                    transcript.note(why)


def _chat_from_pipe(link: Link, stdin: TextIO, json_events: bool) -> None:
    """Send the piped lines; after the last, wait (bounded) for their answers, then /quit and
    wait (bounded) for the server to close."""
    session = link.session
    ended = threading.Event()  # set by whichever thread finishes first, and by the other
    link.start(lambda end: ended.set())
    # Piped input may hold lines too long to send; they are skipped, whatever their length.
    piped_lines = LineReader(stdin.buffer.read1, LineBuffer(max_unterminated=sys.maxsize))
    sender = StdinSender(piped_lines, link.send_data, session.program_line if json_events else session.op_line,
                         ended.set)
    sender.start()
    ended.wait()
    unanswered = session.labels.wait(ANSWER_TIMEOUT_SECONDS) if sender.sent_all else 0
    if link.end is not None or not sender.sent_all:
        if session.quitting:
            return
        raise link.end or sender.error
    link.send_data(QUIT)
    link.wait(DRAIN_TIMEOUT_SECONDS)
    if unanswered:
        raise ConnectionLostError(f"the server left {unanswered} of your lines unanswered for "
                                  f"{ANSWER_TIMEOUT_SECONDS:g} s")


_CHAT_KEYS = KeyBindings()


@_CHAT_KEYS.add("c-c")
def _clear_or_leave(event: KeyPressEvent) -> None:
    """Ctrl-C clears a line being typed, as shells do; on an empty line it leaves."""
    buffer = event.app.current_buffer
    if buffer.text:
        buffer.reset()
    else:
        event.app.exit(exception=KeyboardInterrupt())


class _Hidden(Processor):
    """Shows nothing of what is typed, not even a ``*`` a character: its length is a secret too."""

    def apply_transformation(self, transformation_input: TransformationInput) -> Transformation:
        return Transformation([], source_to_display=lambda index: 0, display_to_source=lambda index: 0)


def _ask_person(question: str, secret: bool) -> str:
    """Ask at the terminal, in a prompt of its own so that no password enters the chat's history."""
    return prompt(question, input_processors=[_Hidden()] if secret else None)


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


def _columns() -> int:
    """The terminal's width now (it may have been resized since the last line)."""
    return shutil.get_terminal_size().columns


def _warn(text: str) -> None:
    """A diagnostic for whoever runs the client, on stderr (stdout may be a program's)."""
    print(f"groupchat: {text}", file=sys.stderr, flush=True)
