"""The join client against a scripted JSON server on loopback: in a pipe, a thread, a terminal, for programs.

The scripted server is a real listening socket played line by line by the test, speaking the
JSON mode (:mod:`groupchat.jsonl`) as the real server does: a text greeting, then, once the
client's ``/mode json`` is read, events.  So each refusal, welcome, acknowledgement and close
comes exactly when the test says.  The client runs in a thread (piped input), as ``python -m
groupchat join`` (exit codes, one-line errors) and in a real pseudo-terminal (the prompt,
colours, Tab, the up arrow) and with ``--json`` (every line of stdout an event); the last
tests join the real ``groupchat serve``, with TLS (certificates made by trustme for the run),
passwords, a text connection beside it, and the README's example bot.  The pure parts (the handshake,
labels, rendering) are tested in test_session.py and test_view.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import fcntl
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time
from concurrent.futures import Future
from typing import Iterator, Optional

import pytest
import trustme
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from groupchat import jsonl
from groupchat.client import link
from groupchat.client import terminal as client
from groupchat.client.link import LineReader, connect, parsed, resolve
from groupchat.client.terminal import outgoing_lines, run_client
from groupchat.errors import ConnectError, ConnectionLostError
from groupchat.protocol import NAME_PROMPT, PASSWORD_PROMPT, LineTooLong, clean_text, encode_line, render_refusal
from groupchat.tls import client_context, server_context

from conftest import GROUPCHAT, REPO, UNLIMITED, WAIT_SECONDS, Peer, ServerProcess, stored_messages, wait_for

pytestmark = pytest.mark.timeout(30)

STAMPED = r"\[\d\d:\d\d\]"
# The prompt, drawn again: type Ctrl-D only after it, for between prompts (and while a line
# is printed above one) the terminal is in cooked mode, where Ctrl-D is not a key.
# prompt_toolkit may draw the prompt's space as a cursor move.
PROMPT = r"\n> ?"
UP_ARROW = "\x1b[A"
PASSWORD = "s3cret"
# SGR parameters that set a foreground colour: 30-37, 90-97, and 38 (256 colours or RGB).
FOREGROUNDS = {str(code) for code in [*range(30, 39), *range(90, 98)]}
NOON = 1796126400.0  # 2026-12-01 12:00 UTC: the time of the scripted server's messages
NOON_STAMP = time.strftime("%H:%M", time.localtime(NOON))  # as the client shows it, here
SWITCH = "/mode json"
QUIT = "/quit"


def event(kind: str, **fields) -> str:
    """One event's line, as the server sends it."""
    return jsonl.render_event(kind, **fields).decode().rstrip("\n")


def message(sender: str, text: str, id: int = 100, **fields) -> str:
    return event("msg", id=id, room="lobby", ts=jsonl.iso_time(NOON), **{"from": sender}, text=text, **fields)


def sent(op: str, text: str, label: str) -> str:
    """The line the client sends for one labeled operation."""
    return jsonl.render_operation(op, text, label).decode().rstrip("\n")


def ack(label: str, id: Optional[int] = None) -> str:
    return event("ack", label=label, id=id)


def welcome_event(name: str, names: tuple[str, ...] = ()) -> str:
    return event("welcome", name=name, room="lobby", names=list(names), count=len(names))


GOODBYE = event("bye", code=jsonl.BYE_QUIT, message="Goodbye.")


class ScriptedServer:
    """The server's side of one connection, played by the test on a real loopback socket."""

    def __init__(self, host: str = "127.0.0.1", tls: Optional[ssl.SSLContext] = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.tls = tls
        self.listener = socket.create_server((host, 0), family=family)
        self.listener.settimeout(WAIT_SECONDS)
        self.port = self.listener.getsockname()[1]
        self.conn: Optional[socket.socket] = None
        self._lines: Optional[LineReader] = None

    def accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(WAIT_SECONDS)
        if self.tls is not None:
            self.conn = self.tls.wrap_socket(self.conn, server_side=True)
        self._lines = LineReader(self.conn.recv)

    def say(self, *lines: str) -> None:
        self.conn.sendall(b"".join(encode_line(line) for line in lines))

    def next_line(self) -> Optional[str]:
        """The client's next line; None once it has closed its side; TimeoutError if it is silent."""
        return self._lines.read_line()

    def switch(self, asks: str = "name") -> None:
        """Accept the client and greet it as the real server does: in text at once, then, once
        its switch to JSON is read, the same question as an event."""
        self.accept()
        self.say(PASSWORD_PROMPT if asks == "password" else NAME_PROMPT)
        assert self.next_line() == SWITCH
        self.say(event("mode", mode="json"), event("prompt", **{"for": asks}))

    def welcome(self, name: str, names: tuple[str, ...] = ()) -> None:
        """Accept the client and let it in as ``name``, with ``names`` here already."""
        self.switch()
        assert self.next_line() == name
        self.say(welcome_event(name, names))

    def take(self, *operations: tuple[str, str]) -> None:
        """Read the client's next labeled operations, (op, text) each, and acknowledge them."""
        for op, text in operations:
            line = json.loads(self.next_line())
            assert (line["op"], line.get("text", line.get("line"))) == (op, text), line
            self.say(ack(line["label"], id=200 if op == jsonl.OP_SEND else None))

    def goodbye(self) -> None:
        """Wait for the client's /quit, answer it, and close."""
        assert self.next_line() == QUIT
        self.say(GOODBYE)
        self.close()

    def close(self) -> None:
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, str]:
    """PEM files made for this run: a CA ("ca"), and a certificate ("cert", "key") it issued to 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    issued.cert_chain_pems[0].write_to_path(files["cert"])
    issued.private_key_pem.write_to_path(files["key"])
    return {role: str(path) for role, path in files.items()}


@pytest.fixture(scope="module")
def tls_server(certificates) -> Iterator[ServerProcess]:
    """``groupchat serve`` with TLS, shared by this module's tests."""
    server = ServerProcess("--certfile", certificates["cert"], "--keyfile", certificates["key"])
    yield server
    server.kill()


@pytest.fixture(scope="module")
def password_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("password") / "password"
    path.write_text(PASSWORD + "\n")
    return str(path)


@pytest.fixture(scope="module")
def password_server(password_file) -> Iterator[ServerProcess]:
    """``groupchat serve --password-file``, shared by this module's tests."""
    server = ServerProcess("--password-file", password_file)
    yield server
    server.kill()


def tls_peer(port: int, cafile: str) -> Peer:
    """A raw TLS connection to a server on 127.0.0.1, verified against ``cafile``."""
    context = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    return Peer(("127.0.0.1", port), sock=context.wrap_socket(raw, server_hostname="127.0.0.1"))


def in_background(stdin: io.TextIOBase, port: int, host: str = "127.0.0.1", **kwargs) -> tuple[Future, io.StringIO]:
    """``run_client`` at one address in a thread with piped ``stdin``: its future result, and what it printed."""
    printed = io.StringIO()
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(run_client(addresses=[(host, port)], stdin=stdin, stdout=printed, **kwargs))
        except BaseException as exc:  # the test looks at it through the future
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future, printed


def piped(data: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data))


@pytest.fixture
def open_pipe() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A stdin that stays open until the test writes to or closes its other end (the int)."""
    read_fd, write_fd = os.pipe()
    stdin = open(read_fd, "r")
    yield stdin, write_fd
    os.close(write_fd)
    for thread in threading.enumerate():  # the client's reader of stdin now sees its end
        if thread.name == "stdin-sender":
            thread.join(WAIT_SECONDS)
    stdin.close()


def join_command(port: Optional[int], name: str, *options: str, host: str = "127.0.0.1") -> list[str]:
    """``groupchat join HOST PORT``, or with no port ``groupchat join HOST`` (which may name several)."""
    return GROUPCHAT + ["join", host, *([] if port is None else [str(port)]), "--name", name, *options]


def client_env(**overrides: str) -> dict[str, str]:
    """The environment for a client subprocess: no NO_COLOR or password from the test's own."""
    env = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "GROUPCHAT_PASSWORD")}
    return dict(env, **overrides)


def join_process(port: int, name: str, stdin: bytes, *options: str,
                 env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """``groupchat join`` as a subprocess whose stdin is ``stdin``, already written and closed."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, stdin)  # small enough for the pipe's buffer
    os.close(write_fd)
    try:
        return subprocess.Popen(join_command(port, name, *options), stdin=read_fd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO, env=env or client_env())
    finally:
        os.close(read_fd)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """Wait for a subprocess started by :func:`join_process`: exit code, stdout, stderr."""
    try:
        out, err = proc.communicate(timeout=WAIT_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


class Terminal:
    """``groupchat join`` in a real pseudo-terminal: type keys, wait for text to show on it."""

    def __init__(self, port: Optional[int], name: str, *options: str, host: str = "127.0.0.1", columns: int = 0,
                 **env: str) -> None:
        self.fd, child_fd = os.openpty()
        if columns:  # else the size is unknown, and the client takes 80 columns
            fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        # No cursor-position queries: nothing here would answer them.
        env = client_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", **env)
        self.proc = subprocess.Popen(join_command(port, name, *options, host=host), stdin=child_fd, stdout=child_fd,
                                     stderr=child_fd, cwd=REPO, env=env)
        os.close(child_fd)
        self._shown = b""

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.fd)

    @property
    def raw(self) -> str:
        """All it has shown, escape sequences and bells included."""
        return self._shown.decode("utf-8", errors="replace")

    @property
    def text(self) -> str:
        """All it has shown, without escape sequences; lines kept apart."""
        return "\n".join(clean_text(line) for line in self.raw.split("\n"))

    @property
    def colours(self) -> list[str]:
        """The escape sequences it has shown that set a foreground colour."""
        return [sgr for sgr in re.findall(r"\x1b\[([\d;]*)m", self.raw) if FOREGROUNDS & set(sgr.split(";"))]

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def type_and_wait(self, keys: str, timeout: float = WAIT_SECONDS) -> None:
        """Type ``keys`` and wait until the terminal has shown something more (its redraw)."""
        shown = len(self._shown)
        self.type(keys)
        deadline = time.monotonic() + timeout
        while len(self._shown) == shown:
            if not self._read(deadline):
                pytest.fail(f"nothing shown within {timeout}s after typing {keys!r}")

    def expect(self, pattern: str, timeout: float = WAIT_SECONDS) -> re.Match:
        """Wait until ``pattern`` (``.`` matching newlines too) is found in what it has shown."""
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.text, re.DOTALL)):
            if not self._read(deadline):
                pytest.fail(f"{pattern!r} not shown within {timeout}s; shown: {self.text!r}")
        return match

    def wait(self, timeout: float = WAIT_SECONDS) -> int:
        """Wait for the client to exit, reading what it shows meanwhile; return its exit code."""
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            pass
        try:
            return self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout}s; shown: {self.text!r}")

    def _read(self, deadline: float) -> bool:
        """Read what arrives before ``deadline``; False if nothing did, or the terminal closed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the client has exited and closed its end
            data = b""
        self._shown += data
        return bool(data)


# -- the small parts --------------------------------------------------------------------------

def test_outgoing_lines_split_clean_and_skip_blanks():
    assert outgoing_lines("one\r\ntwo\x07\n\n \t\n\x1b[31mred") == ["one", "two", "red"]


def test_a_line_from_the_server_is_an_event_or_text():
    assert parsed(GOODBYE) == {"v": 1, "type": "bye", "code": "QUIT", "message": "Goodbye."}
    for text in (NAME_PROMPT, "[not json", '["a list"]', LineTooLong(4096)):
        assert parsed(text) == text


def test_line_reader_keeps_lines_across_reads_and_reports_overlong_ones():
    chunks = iter([b"a\nb", b"c\n" + b"x" * 5000 + b"\nd\n"])
    lines = LineReader(lambda size: next(chunks, b""))
    assert [lines.read_line() for _ in range(5)] == ["a", "bc", LineTooLong(4096), "d", None]
    assert lines.read_line() is None


def test_a_lost_connection_ends_the_prompt_whether_it_is_running_or_about_to():
    end = ConnectionLostError("the server closed the connection")
    with create_pipe_input() as keys:
        session: PromptSession[str] = PromptSession(input=keys, output=DummyOutput())
        client._interrupt_prompt(session.app, end)  # no prompt yet: the next one's pre_run sees it
        with pytest.raises(ConnectionLostError):
            session.prompt("> ", pre_run=lambda: client._end_prompt(session.app, end))
        reader = threading.Thread(target=client._interrupt_prompt, args=(session.app, end))
        with pytest.raises(ConnectionLostError):
            session.prompt("> ", pre_run=reader.start)  # a prompt that is running
        reader.join()


# -- connecting ----------------------------------------------------------------------------

def test_connect_sets_tcp_nodelay(scripted):
    with connect(resolve("127.0.0.1", scripted.port)[0]) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_connection_refused_says_to_check_for_a_server(closed_port):
    with pytest.raises(ConnectError) as error:
        connect(resolve("127.0.0.1", closed_port)[0])
    assert str(error.value) == f"connection refused: is a server running on 127.0.0.1:{closed_port}?"


def test_connection_refused_is_one_line_and_exit_1(closed_port):
    result = subprocess.run(join_command(closed_port, "alice"), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, cwd=REPO, timeout=WAIT_SECONDS)
    assert result.returncode == 1
    assert result.stderr == (f"Error: connection refused: is a server running on "
                             f"127.0.0.1:{closed_port}?\n")
    assert result.stdout == ""


def test_unknown_host_is_one_line_and_exit_1():
    result = subprocess.run(join_command(7111, "alice", host="no-such-host.invalid"),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO,
                            timeout=2 * WAIT_SECONDS)  # a resolver may take its time to say no
    assert result.returncode == 1
    assert result.stderr.startswith("Error: unknown host no-such-host.invalid")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_port_that_never_asks_for_a_name_fails_instead_of_hanging(scripted, monkeypatch):
    monkeypatch.setattr(link, "CONNECT_TIMEOUT_SECONDS", 0.2)
    future, _ = in_background(piped(b"hi\n"), port=scripted.port, name="alice")
    scripted.accept()
    with pytest.raises(ConnectError, match="no answer within 0.2 s: is it a groupchat server"):
        future.result(WAIT_SECONDS)


def test_a_tls_handshake_with_no_answer_fails_instead_of_hanging(scripted, monkeypatch):
    monkeypatch.setattr(link, "CONNECT_TIMEOUT_SECONDS", 0.2)
    with pytest.raises(ConnectError) as error:
        connect(resolve("127.0.0.1", scripted.port)[0], tls=client_context())
    assert str(error.value) == (f"TLS with 127.0.0.1:{scripted.port} failed: no answer within 0.2 s: "
                                "is it serving TLS?")


def test_a_plain_client_at_a_tls_server_is_told_to_use_tls_at_once(tls_server):
    # Not after the 10 s a server has to answer: the client speaks first, and TLS hangs up.
    code, out, err = finish(join_process(tls_server.port, "alice", b"hi\n"))
    assert code == 1
    assert err == ("Error: the server closed the connection as soon as it heard plain text, before any "
                   "greeting: it serves TLS; use --tls\n")


def test_a_slow_greeting_is_waited_for_after_the_client_spoke_first(scripted):
    future, printed = in_background(piped(b""), port=scripted.port, name="alice")
    scripted.accept()
    assert scripted.next_line() == SWITCH  # before any greeting: a TLS server would hang up now
    scripted.say(NAME_PROMPT, event("mode", mode="json"), event("prompt", **{"for": "name"}))
    assert scripted.next_line() == "alice"  # the switch was not sent twice
    scripted.say(welcome_event("alice"))
    scripted.goodbye()
    assert future.result(WAIT_SECONDS) == 0
    assert "Welcome, alice!" in printed.getvalue()


def test_ipv6():
    try:
        server = ScriptedServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        future, printed = in_background(piped(b""), host="::1", port=server.port, name="alice")
        server.welcome("alice")
        server.goodbye()
        assert future.result(WAIT_SECONDS) == 0
        assert printed.getvalue().startswith(f"Connected to [::1]:{server.port}\n")
    finally:
        server.close()


# -- piped input ---------------------------------------------------------------------------

def test_piped_lines_go_in_order_are_shown_when_acknowledged_and_the_client_stays_for_the_last_words(
        scripted):
    future, printed = in_background(piped(b"one\ntwo\n\n  \nthree"), port=scripted.port, name="bot")
    scripted.welcome("bot")
    lines = [json.loads(scripted.next_line()) for _ in range(3)]
    assert lines == [{"op": "send", "text": text, "label": f"c{n}"}
                     for n, text in enumerate(["one", "two", "three"], 1)]
    scripted.say(ack("c1", 7), event("error", code=jsonl.RATE_LIMITED, message="Slow down.", label="c2"),
                 ack("c3", 8))
    assert scripted.next_line() == QUIT  # only once every line was answered
    scripted.conn.sendall(b'{"type":"msg","text":"' + b"x" * link.MAX_SERVER_LINE_BYTES + b'"}\n')
    scripted.say(message("bob", "bye bot"), GOODBYE)
    scripted.close()
    assert future.result(WAIT_SECONDS) == 0
    printed_lines = printed.getvalue().splitlines()
    assert [re.sub(STAMPED, "[HH:MM]", line) for line in printed_lines] == [
        f"Connected to 127.0.0.1:{scripted.port}",
        "*** Welcome, bot! Nobody else is here yet.",
        "[HH:MM] <bot> one",
        "[HH:MM] *** Slow down.",
        "[HH:MM] <bot> three",
        f"(a line longer than {link.MAX_SERVER_LINE_BYTES} bytes from the server was left out)",
        "[HH:MM] <bob> bye bot",
        "[HH:MM] *** Goodbye.",
    ]
    assert printed_lines[6] == f"[{NOON_STAMP}] <bob> bye bot"  # the message's own time, in local time


def test_a_piped_line_too_long_is_not_sent_however_long(scripted, capfd):
    future, _ = in_background(piped(b"x" * 1_000_000 + b"\nok\n"), port=scripted.port, name="bot")
    scripted.welcome("bot")
    scripted.take((jsonl.OP_SEND, "ok"))
    scripted.goodbye()
    assert future.result(WAIT_SECONDS) == 0
    assert "a line longer than 4096 bytes was not sent" in capfd.readouterr().err


def test_lines_the_server_never_answers_are_given_up_on_and_exit_1(scripted, monkeypatch):
    monkeypatch.setattr(client, "ANSWER_TIMEOUT_SECONDS", 0.3)
    future, _ = in_background(piped(b"one\ntwo\n"), port=scripted.port, name="bot")
    scripted.welcome("bot")
    scripted.take((jsonl.OP_SEND, "one"))
    assert json.loads(scripted.next_line())["text"] == "two"  # and never acknowledged
    scripted.goodbye()
    with pytest.raises(ConnectionLostError, match="^the server left 1 of your lines unanswered for 0.3 s$"):
        future.result(WAIT_SECONDS)


def test_the_server_leaving_ends_a_piped_client_even_while_its_input_is_quiet(scripted, open_pipe):
    stdin, _ = open_pipe
    future, _ = in_background(stdin, port=scripted.port, name="bot")
    scripted.welcome("bot")
    scripted.close()
    with pytest.raises(ConnectionLostError, match="^the server closed the connection$"):
        future.result(WAIT_SECONDS)


def test_quit_ends_a_piped_client_cleanly_even_with_input_left(scripted, open_pipe):
    stdin, writer = open_pipe
    future, printed = in_background(stdin, port=scripted.port, name="bot")
    scripted.welcome("bot")
    os.write(writer, b"/quit\n")
    assert json.loads(scripted.next_line()) == {"op": "cmd", "line": "/quit", "label": "c1"}
    scripted.say(GOODBYE)
    scripted.close()
    assert future.result(WAIT_SECONDS) == 0
    assert re.search(rf"{STAMPED} \*\*\* Goodbye\.\n$", printed.getvalue())


def test_a_close_during_the_handshake_says_the_servers_reason(scripted):
    future, printed = in_background(piped(b""), port=scripted.port, name="bot")
    scripted.accept()
    scripted.say(render_refusal("this address is banned"))  # before it reads the switch to JSON
    scripted.close()
    with pytest.raises(ConnectionLostError, match="before letting you in: this address is banned$"):
        future.result(WAIT_SECONDS)
    assert "*** Sorry, this address is banned." in printed.getvalue()


def test_a_server_with_no_json_mode_is_one_error(scripted):
    future, _ = in_background(piped(b""), port=scripted.port, name="bot")
    scripted.accept()
    scripted.say(NAME_PROMPT)
    assert scripted.next_line() == SWITCH  # taken for a name, as an older server would
    scripted.say(render_refusal('a name cannot start with "/"'), NAME_PROMPT)
    with pytest.raises(ConnectError, match="^the server has no JSON mode, which this client needs: "
                                           "is it an older groupchat server\\?$"):
        future.result(WAIT_SECONDS)


def test_a_bye_during_the_handshake_says_the_servers_reason(scripted):
    future, printed = in_background(piped(b""), port=scripted.port, name="bot")
    scripted.switch()
    assert scripted.next_line() == "bot"
    scripted.say(event("bye", code=jsonl.BYE_BANNED, message='the name "bot" is banned'))
    scripted.close()
    with pytest.raises(ConnectionLostError, match='before letting you in: the name "bot" is banned$'):
        future.result(WAIT_SECONDS)
    assert printed.getvalue().endswith('*** Sorry, the name "bot" is banned; goodbye.\n')


def test_a_password_is_given_before_the_name(scripted):
    future, _ = in_background(piped(b""), port=scripted.port, name="bot",
                              password="s3cret")
    scripted.switch(asks="password")
    assert scripted.next_line() == "s3cret"
    scripted.say(event("prompt", **{"for": "name"}))
    assert scripted.next_line() == "bot"
    scripted.say(welcome_event("bot"))
    scripted.goodbye()
    assert future.result(WAIT_SECONDS) == 0


def test_a_refused_password_ends_the_handshake_at_once(scripted):
    future, printed = in_background(piped(b""), port=scripted.port, name="bot",
                                    password="wrong")
    scripted.switch(asks="password")
    assert scripted.next_line() == "wrong"
    scripted.say(event("bye", code=jsonl.BYE_WRONG_PASSWORD, message="wrong password"))  # kept open a while
    with pytest.raises(ConnectError, match=r"^the server refused the password \(from --password-file "
                                           r"or GROUPCHAT_PASSWORD\)$"):
        future.result(WAIT_SECONDS)
    assert printed.getvalue().endswith("*** Sorry, wrong password; goodbye.\n")


def test_a_password_nobody_can_give_is_one_error(scripted):
    future, _ = in_background(piped(b"hi\n"), port=scripted.port, name="bot")
    scripted.switch(asks="password")
    with pytest.raises(ConnectError, match="wants a password, and stdin is not a terminal"):
        future.result(WAIT_SECONDS)
    assert scripted.next_line() is None


def test_a_server_sending_no_newlines_is_cut_off(scripted, open_pipe):
    stdin, _ = open_pipe
    future, _ = in_background(stdin, port=scripted.port, name="bot")
    scripted.welcome("bot")
    try:
        scripted.conn.sendall(b"x" * (32 * link.MAX_SERVER_LINE_BYTES))
    except ConnectionError:
        pass  # the client hung up before all of it was sent
    with pytest.raises(ConnectionLostError, match="^the server sent more than .* without a newline$"):
        future.result(WAIT_SECONDS)


def test_join_piped_sends_every_line_and_exits_0_once_they_are_answered(scripted):
    proc = join_process(scripted.port, "bot", stdin=b"build 1234 passed\n\nsecond line\n//third\n")
    scripted.welcome("bot")
    scripted.take((jsonl.OP_SEND, "build 1234 passed"), (jsonl.OP_SEND, "second line"), (jsonl.OP_SEND, "/third"))
    scripted.say(message("alice", "thanks bot"))
    scripted.goodbye()
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == [f"Connected to 127.0.0.1:{scripted.port}",
                         "*** Welcome, bot! Nobody else is here yet."]
    assert [re.sub(STAMPED, "", line) for line in lines[2:]] == [
        " <bot> build 1234 passed", " <bot> second line", " <bot> /third", " <alice> thanks bot", " *** Goodbye."]
    assert lines[5] == f"[{NOON_STAMP}] <alice> thanks bot"  # the message's own time, in local time


def refused_as_bob(scripted: ScriptedServer, *options: str) -> tuple[int, str, str]:
    """``groupchat join`` as bob, piped, at a server that refuses the name: exit code, stdout, stderr."""
    proc = join_process(scripted.port, "bob", b"hi\n", *options)
    scripted.switch()
    assert scripted.next_line() == "bob"
    scripted.say(event("error", code=jsonl.NAME_TAKEN, message='the name "bob" is taken'),
                 event("prompt", **{"for": "name"}))
    assert scripted.next_line() is None
    code, out, err = finish(proc)
    assert code == 1
    assert err == ('Error: the server refused the name "bob": the name "bob" is taken; '
                   "choose another with --name\n")
    return code, out, err


def test_join_piped_with_a_refused_name_exits_1_with_the_reason(scripted):
    assert refused_as_bob(scripted)[1].splitlines()[-1] == '*** Sorry, the name "bob" is taken.'


# -- at a terminal -------------------------------------------------------------------------

def test_incoming_lines_do_not_garble_a_half_typed_line_and_ctrl_d_leaves_saying_quit(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("hel")
        term.expect(r"> ?hel")
        scripted.say(message("bob", "one"), message("bob", "two"))
        term.expect(r"<bob> one.*<bob> two.*> ?hel")  # the half line is drawn again below them
        term.type("lo\r")
        assert scripted.next_line() == sent(jsonl.OP_SEND, "hello", "c1")
        term.type("/me waves\r")
        assert scripted.next_line() == sent(jsonl.OP_CMD, "/me waves", "c2")
        assert "<alice> hello" not in term.text  # not before the server has it
        scripted.say(ack("c1", 7), ack("c2"))
        term.expect(rf"{STAMPED} <alice> hello.*{STAMPED} \* alice waves{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert [scripted.next_line(), scripted.next_line()] == [QUIT, None]
        assert "Traceback" not in term.text


def test_ctrl_c_leaves_with_exit_0_saying_quit(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("never sent")
        term.type("\x03\x03")  # the first clears the line, the second leaves
        assert term.wait() == 0
        assert [scripted.next_line(), scripted.next_line()] == [QUIT, None]
        assert "Traceback" not in term.text


def test_a_refused_name_at_a_terminal_asks_for_another(scripted):
    with Terminal(scripted.port, "bob") as term:
        scripted.switch()
        assert scripted.next_line() == "bob"
        scripted.say(event("error", code=jsonl.NAME_TAKEN, message='the name "bob" is taken'),
                     event("prompt", **{"for": "name"}))
        term.expect(r'\*\*\* Sorry, the name "bob" is taken\..*\nName:')
        term.type("rob\r")
        assert scripted.next_line() == "rob"
        scripted.say(welcome_event("rob", ("bob",)))
        term.expect(rf"Welcome, rob! Here now: bob\..*{PROMPT}")
        term.type("hi\r")
        scripted.take((jsonl.OP_SEND, "hi"))
        term.expect(rf"{STAMPED} <rob> hi{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0


def test_a_password_is_asked_at_a_terminal_and_neither_shown_nor_recalled(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.switch(asks="password")
        term.expect(r"\nPassword:")
        for key in PASSWORD:
            term.type_and_wait(key)  # each key is drawn before the next comes
        term.type("\r")
        assert scripted.next_line() == PASSWORD
        typed = term.text[term.text.rindex("Password:"):].split("\n")[0]
        assert typed.strip() == "Password:", typed  # not one * a character
        scripted.say(event("prompt", **{"for": "name"}))
        assert scripted.next_line() == "alice"
        scripted.say(welcome_event("alice"))
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type(UP_ARROW + "next\r")  # had the password been recalled, it would come first
        scripted.take((jsonl.OP_SEND, "next"))
        term.expect(rf"<alice> next{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert PASSWORD not in term.text


def test_the_server_leaving_interrupts_the_prompt_and_exits_1_without_reconnecting(scripted):
    with Terminal(scripted.port, "alice", "--no-reconnect") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("half a li")
        term.expect(r"> ?half a li")
        scripted.close()
        assert term.wait() == 1
        assert "Error: the server closed the connection" in term.text
        assert "Traceback" not in term.text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_restarted_server_gets_the_client_back_by_itself_with_every_line_once(tmp_path, signum):
    history = str(tmp_path / "history.db")
    options = ("--history", history, "--max-per-address", "0", "--rate", "0")
    first = ServerProcess(*options)
    second = None
    try:
        with Terminal(first.port, "alice") as term:
            term.expect(rf"Welcome, alice!.*{PROMPT}")
            bob = Peer(first.address)
            bob.join("bob")
            bob.say("before the restart")
            term.expect(r"<bob> before the restart")
            wait_for(lambda: ("bob", "before the restart") in stored_messages(history), what="the line stored")
            term.type("half a li")
            term.expect(r"> ?half a li")
            first.proc.send_signal(signum)
            first.proc.wait(WAIT_SECONDS)
            bob.close()
            term.expect(r"Connection lost; reconnecting in \d+\.\d s \(attempt 1\)")
            second = ServerProcess(*options, "--port", str(first.port))
            bob = Peer(second.address)
            bob.join("bob")
            for number in range(3):
                bob.say(f"meanwhile {number}")
            term.expect(r"Reconnected: .*meanwhile 2")
            bob.say("after it")
            term.expect(r"<bob> after it")
            term.type("ne\r")  # the line typed before the restart, finished after it
            bob.expect(r"<alice> half a line")
            term.expect(rf"<alice> half a line{PROMPT}")
            lines = term.text
            for said in ("before the restart", "meanwhile 0", "meanwhile 1", "meanwhile 2", "after it",
                         "half a line"):
                assert len(re.findall(rf"> {said}$", lines, re.MULTILINE)) == 1, (said, lines)
            assert lines.index("meanwhile 2") < lines.index("after it")
            term.type("\x04")
            assert term.wait() == 0
            bob.close()
    finally:
        first.kill()
        if second is not None:
            second.kill()


@pytest.mark.parametrize("options, ending, said", [
    ((), "kick", "Error: You were kicked by bob: spam."),
    (("--no-reconnect",), "shutdown", "Error: Server is shutting down."),
])
def test_a_kick_or_a_shutdown_ends_the_client_with_a_line_saying_which(tmp_path, options, ending, said):
    op_password = tmp_path / "op"
    op_password.write_text("sesame\n")
    server = ServerProcess("--op-password-file", str(op_password), "--rate", "0")
    try:
        with Terminal(server.port, "alice", *options) as term:
            term.expect(rf"Welcome, alice!.*{PROMPT}")
            bob = Peer(server.address)
            bob.join("bob")
            if ending == "kick":
                bob.say("/op sesame")
                bob.expect("You are now an operator")
                bob.say("/kick alice spam")
            else:
                server.proc.send_signal(signal.SIGTERM)
            assert term.wait() == 1
            assert said in term.text, term.text
            assert "the server closed the connection" not in term.text
            bob.close()
    finally:
        server.kill()


@pytest.mark.timeout(60)
def test_a_client_whose_server_stops_moves_to_the_next_address_and_carries_on(server_process):
    first, second = (server_process("--rate", "0") for _ in range(2))
    both = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
    bob = Peer(second.address)
    try:
        with Terminal(None, "alice", host=both) as term:
            term.expect(rf"Connected to 127.0.0.1:{first.port}\n.*Welcome, alice!.*{PROMPT}")
            bob.join("bob")
            first.proc.terminate()  # "Server is shutting down": the client comes back, to the next
            assert first.finish()[0] == 0
            term.expect(rf"Connected to 127.0.0.1:{second.port}\n.*Welcome, alice! Here now: bob\..*Reconnected")
            term.expect(PROMPT)
            term.type("hello, second server\r")
            bob.expect(r"<alice> hello, second server$")
            term.expect(rf"<alice> hello, second server{PROMPT}")
            term.type("\x04")
            assert term.wait() == 0
    finally:
        bob.close()


@pytest.mark.timeout(90)
def test_a_node_killed_under_its_client_it_resumes_on_another_and_sees_what_was_said_meanwhile(
        redis_server, server_process):
    redis = redis_server()
    first, second = (server_process("--redis", redis.url, "--rate", "0") for _ in range(2))
    bob = Peer(second.address)
    try:
        with Terminal(None, "alice", host=f"127.0.0.1:{first.port},127.0.0.1:{second.port}") as term:
            term.expect(rf"Connected to 127.0.0.1:{first.port}\n.*Welcome, alice!.*{PROMPT}")
            bob.join("bob")
            bob.say("before the kill")
            term.expect(r"<bob> before the kill")
            first.proc.kill()  # kill -9: its lease on the name "alice" runs out in its own time
            first.proc.wait()
            term.expect(r"Connection lost")
            for number in range(3):
                bob.say(f"meanwhile {number}")
            # On the second node she resumes her session if it knows it; if not, she joins afresh
            # (once the dead node's lease on her name runs out) and asks for what came after the
            # last id she saw.  Either way she sees what was said meanwhile, each line once.
            term.expect(rf"Connected to 127.0.0.1:{second.port}\n")
            term.expect(r"Reconnected: .*meanwhile 2", timeout=60)
            term.type("back, on the other node\r")
            bob.expect(r"<alice> back, on the other node$")
            term.expect(rf"<alice> back, on the other node{PROMPT}")
            lines = term.text
            for said in ("before the kill", "meanwhile 0", "meanwhile 1", "meanwhile 2"):
                assert len(re.findall(rf"<bob> {said}$", lines, re.MULTILINE)) == 1, (said, lines)
            term.type("\x04")
            assert term.wait() == 0
    finally:
        bob.close()


def test_ctrl_c_clears_a_line_being_typed_and_leaves_from_an_empty_one(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("a draft I regret")
        term.expect(r"> ?a draft I regret")
        term.type("\x03")
        term.type("hi\r")
        scripted.take((jsonl.OP_SEND, "hi"))  # not "a draft I regrethi"
        term.expect(rf"<alice> hi{PROMPT}")
        assert term.proc.poll() is None
        term.type("\x03")
        scripted.goodbye()
        assert term.wait() == 0


def test_lines_typed_while_away_are_sent_after_the_reconnect_in_order(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.switch()
        assert scripted.next_line() == "alice"
        scripted.say(event("session", token="tok1", window=120), welcome_event("alice"))
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("lost?\r")
        assert json.loads(scripted.next_line())["text"] == "lost?"  # taken, never answered
        scripted.conn.close()
        term.expect(r"Connection lost; reconnecting")
        term.type("one\r")
        term.type("two\r")
        scripted.switch()
        assert scripted.next_line() == "/resume tok1 0"
        scripted.say(event("session", token="tok2", window=120),
                     event("welcome", name="alice", room="lobby", names=[], count=0, resumed=True),
                     event("history_end", room="lobby", replay=True, count=0, missed=0))
        term.expect(r"Reconnected; no messages were missed\.")
        scripted.take((jsonl.OP_SEND, "lost?"), (jsonl.OP_SEND, "one"), (jsonl.OP_SEND, "two"))
        term.expect(rf"<alice> lost\?.*<alice> one.*<alice> two{PROMPT}")
        term.type("\x04")
        scripted.goodbye()
        assert term.wait() == 0


def test_ctrl_c_leaves_while_the_client_waits_to_reconnect(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        scripted.close()  # and nothing listens there any more
        term.expect(r"Connection lost; reconnecting in \d+\.\d s \(attempt 1\)")
        term.type("\x03")
        assert term.wait() == 0
        assert "Traceback" not in term.text


def test_mode_is_kept_back_at_a_terminal_and_in_a_pipe(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("/mode text\r")
        term.expect(rf"{STAMPED} \*\*\* not sent: the join client needs the connection in JSON mode{PROMPT}")
        term.type("hi\r")
        scripted.take((jsonl.OP_SEND, "hi"))  # the first line the server gets
        term.expect(rf"<alice> hi{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
    piped_server = ScriptedServer()
    try:
        proc = join_process(piped_server.port, "bot", b"/mode text\nhi\n", "--json")
        piped_server.welcome("bot")
        piped_server.take((jsonl.OP_SEND, "hi"))
        piped_server.goodbye()
        code, out, err = finish(proc)
    finally:
        piped_server.close()
    assert (code, err) == (0, "groupchat: not sent: the join client needs the connection in JSON mode: /mode text\n")


def test_quit_at_a_terminal_shows_the_goodbye_and_exits_0(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("/quit see you\r")
        assert json.loads(scripted.next_line())["line"] == "/quit see you"
        scripted.say(GOODBYE)
        scripted.close()
        assert term.wait() == 0
        assert re.search(rf"{STAMPED} \*\*\* Goodbye\.", term.text)
        assert "Error" not in term.text


def test_lines_are_coloured_and_mentions_ring_at_a_terminal_and_never_in_a_pipe(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        scripted.say(message("bob", "lunch, alice?"))
        term.expect(rf"<bob> lunch, alice\?{PROMPT}")
        assert term.colours, term.raw
        assert "\a" in term.raw
        term.type("\x04")
        assert term.wait() == 0
    piped_server = ScriptedServer()
    try:
        proc = join_process(piped_server.port, "alice", stdin=b"hi\n")
        piped_server.welcome("alice")
        piped_server.take((jsonl.OP_SEND, "hi"))
        piped_server.say(message("bob", "lunch, alice?"))
        piped_server.goodbye()
        code, out, err = finish(proc)
    finally:
        piped_server.close()
    assert (code, err) == (0, "")
    assert "*** Welcome, alice! Nobody else is here yet.\n" in out
    assert f"[{NOON_STAMP}] <bob> lunch, alice?\n" in out
    assert "\x1b" not in out and "\a" not in out


def test_no_color_and_no_bell_at_a_terminal(scripted):
    with Terminal(scripted.port, "alice", "--no-bell", NO_COLOR="1") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        scripted.say(message("bob", "lunch, alice?"),
                     event("dm", id=101, ts=jsonl.iso_time(NOON), **{"from": "bob"}, to="alice", text="psst"))
        term.expect(rf"<bob> lunch, alice\?.*\(private\) <bob> psst{PROMPT}")
        term.type("hi bob\r")
        scripted.take((jsonl.OP_SEND, "hi bob"))
        term.expect(rf"<alice> hi bob{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert term.colours == []
        assert "\a" not in term.raw


def test_tab_completes_commands_and_names_and_up_recalls_your_last_line(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice", ("bob",))
        term.expect(rf"Welcome, alice! Here now: bob\.{PROMPT}")
        term.type("/wh\t")
        term.expect(r"> ?/who")
        term.type("\r")
        assert scripted.next_line() == sent(jsonl.OP_CMD, "/who", "c1")
        scripted.say(event("who", room="lobby", names=["alice", "bob", "carol"], count=3, online=3), ack("c1"))
        term.expect(rf"In lobby \(3\): alice, bob, carol\. 3 online in all\.{PROMPT}")
        term.type("/msg ca\t")
        term.expect(r"> ?/msg carol")  # learnt from the answer to /who
        term.type(" psst\r")
        assert scripted.next_line() == sent(jsonl.OP_CMD, "/msg carol psst", "c2")
        scripted.say(event("dm", id=102, ts=jsonl.iso_time(NOON), **{"from": "alice"}, to="carol", text="psst"),
                     ack("c2"))
        term.expect(rf"\(private to carol\) <alice> psst{PROMPT}")
        term.type("first\r")
        scripted.take((jsonl.OP_SEND, "first"))
        term.expect(rf"<alice> first{PROMPT}")
        term.type(UP_ARROW + "\r")
        scripted.take((jsonl.OP_SEND, "first"))
        term.expect(rf"<alice> first.*<alice> first{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0


def test_a_long_line_wraps_at_word_boundaries_under_its_text(scripted):
    with Terminal(scripted.port, "alice", columns=40) as term:
        scripted.welcome("alice", ("bob",))
        term.expect(rf"Welcome, alice! Here now: bob\.{PROMPT}")
        scripted.say(message("bob", "the quick brown fox jumps over the lazy dog and keeps on running"))
        term.expect(rf"running{PROMPT}")
        lines = re.sub(r"\x1b\[[\d;?]*[a-zA-Z]", "", term.raw).replace("\r", "").split("\n")  # blanks kept
        first = next(index for index, line in enumerate(lines) if "<bob>" in line)
        assert lines[first].endswith("<bob> the quick brown fox jumps")  # 39 of 40 columns
        assert lines[first + 1:first + 3] == [" " * 14 + "over the lazy dog and", " " * 14 + "keeps on running"]
        term.type("\x04")
        scripted.goodbye()
        assert term.wait() == 0


def test_tab_completes_the_room_after_join_and_the_command_after_help(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice", ("bob",))
        term.expect(rf"Welcome, alice! Here now: bob\.{PROMPT}")
        scripted.say(event("leave", id=101, room="lobby", ts=jsonl.iso_time(NOON), names=["bob"], count=1,
                           to="design"))
        term.expect(rf"bob went to design{PROMPT}")
        term.type("/join des\t")
        term.expect(r"> ?/join design")
        term.type("\r")
        assert scripted.next_line() == sent(jsonl.OP_CMD, "/join design", "c1")
        term.type("/help top\t")
        term.expect(r"> ?/help topic")
        term.type("\r")
        assert scripted.next_line() == sent(jsonl.OP_CMD, "/help topic", "c2")
        scripted.say(event("notice", text="/topic [TEXT]: see or set the topic"), ack("c2"))
        term.expect(rf"see or set the topic{PROMPT}")
        term.type("\x04")
        scripted.goodbye()
        assert term.wait() == 0


# -- for programs: join --json ------------------------------------------------------------

def events(out: str) -> list[dict]:
    """Every line of stdout, each of which must be one JSON event."""
    return [jsonl.parse_event(line) for line in out.splitlines()]


def test_json_prints_only_events_and_labels_every_line(scripted):
    stdin = (b'hi\n/who\n\n{"op": "send", "text": "mine", "label": "x7"}\n{"op":"cmd","line":"/rooms"}\n'
             b"//slash\n")
    proc = join_process(scripted.port, "bot", stdin, "--json")
    scripted.welcome("bot")
    sent = [json.loads(scripted.next_line()) for _ in range(5)]
    assert sent == [{"op": "send", "text": "hi", "label": "c1"}, {"op": "cmd", "line": "/who", "label": "c2"},
                    {"op": "send", "text": "mine", "label": "x7"}, {"op": "cmd", "line": "/rooms", "label": "c3"},
                    {"op": "send", "text": "/slash", "label": "c4"}]
    scripted.say(message("alice", "hé \x1b[31m"), ack("c1", 1), ack("c2"),
                 event("error", code=jsonl.RATE_LIMITED, message="Slow down.", label="x7"), ack("c3"))
    scripted.say(ack("c4", 2))
    scripted.goodbye()
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    got = events(out)
    assert [e["type"] for e in got] == ["mode", "prompt", "welcome", "msg", "ack", "ack", "error", "ack", "ack",
                                        "bye"]
    assert got[3]["text"] == "hé "  # no escape sequence reaches stdout either
    assert got[-1] == {"v": 1, "type": "bye", "code": "QUIT", "message": "Goodbye."}


def test_json_sends_a_line_that_is_not_an_operation_as_written(scripted):
    proc = join_process(scripted.port, "bot", b'{"op": \n', "--json")
    scripted.welcome("bot")
    assert scripted.next_line() == '{"op": '
    scripted.say(event("error", code=jsonl.BAD_JSON, message="not a JSON object"))
    scripted.goodbye()  # no label to wait for
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    assert events(out)[-2]["code"] == jsonl.BAD_JSON


def test_json_says_what_is_not_an_event_on_stderr(scripted):
    proc = join_process(scripted.port, "bot", b"", "--json")
    scripted.accept()
    scripted.say("*** Sorry, the server is full; goodbye.")
    scripted.close()
    code, out, err = finish(proc)
    assert (code, out) == (1, "")
    assert err == ("groupchat: the server said: *** Sorry, the server is full; goodbye.\n"
                   "Error: the server closed the connection before letting you in: "
                   "the server is full; goodbye\n")


def test_json_with_a_refused_name_exits_1_after_the_error_event(scripted):
    out = refused_as_bob(scripted, "--json")[1]
    assert [e["type"] for e in events(out)] == ["mode", "prompt", "error", "prompt"]


def test_the_text_greeting_before_the_switch_never_reaches_stdout(scripted):
    proc = join_process(scripted.port, "bot", b"", "--json")
    scripted.welcome("bot")
    scripted.goodbye()
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    assert NAME_PROMPT not in out
    assert [e["type"] for e in events(out)] == ["mode", "prompt", "welcome", "bye"]


# -- with the real server ------------------------------------------------------------------

def test_two_clients_chat_through_the_real_server(server_process):
    server = server_process()
    with Terminal(server.port, "alice") as alice:
        alice.expect(rf"Welcome, alice! Nobody else is here yet\.{PROMPT}")
        with Terminal(server.port, "bob") as bob:
            bob.expect(rf"Welcome, bob! Here now: alice\.{PROMPT}")
            alice.expect(rf"{STAMPED} \*\*\* bob joined{PROMPT}")
            alice.type("hi bob\r")
            alice.expect(rf"{STAMPED} <alice> hi bob{PROMPT}")
            bob.expect(rf"{STAMPED} <alice> hi bob{PROMPT}")
            bob.type("/nick robert\r")
            bob.expect(rf"bob is now known as robert{PROMPT}")
            bob.type("hi alice\r")
            bob.expect(rf"{STAMPED} <robert> hi alice{PROMPT}")
            alice.expect(rf"{STAMPED} <robert> hi alice{PROMPT}")
            bot = join_process(server.port, "bot", stdin=b"build 1234 passed\n")
            assert finish(bot)[0] == 0
            alice.expect(rf"{STAMPED} <bot> build 1234 passed\n.*bot left.*{PROMPT}")
            alice.type("/quit\r")
            assert alice.wait() == 0
            bob.expect(rf"alice left \(quit\){PROMPT}")
            bob.type("\x04")
            assert bob.wait() == 0


def test_join_with_tls_chats_through_the_real_server(tls_server, certificates):
    trust = ("--tls", "--cafile", certificates["ca"])
    with Terminal(tls_server.port, "alice", *trust) as alice:
        alice.expect(rf"Welcome, alice!.*{PROMPT}")
        alice.type("hello over tls\r")
        alice.expect(rf"{STAMPED} <alice> hello over tls{PROMPT}")
        code, out, err = finish(join_process(tls_server.port, "bot", b"build 1234 passed\n", *trust))
        assert (code, err) == (0, "")
        assert "*** Welcome, bot! Here now: alice." in out.splitlines()
        alice.expect(rf"{STAMPED} <bot> build 1234 passed{PROMPT}")
        alice.type("\x04")
        assert alice.wait() == 0


def test_a_piped_tls_client_waits_for_its_answers_and_hears_the_servers_last_words(certificates):
    server = ScriptedServer(tls=server_context(certificates["cert"], certificates["key"]))
    try:
        future, printed = in_background(piped(b"one\ntwo\n"), port=server.port, name="bot",
                                        tls=client_context(certificates["ca"]))
        server.welcome("bot")
        server.take((jsonl.OP_SEND, "one"), (jsonl.OP_SEND, "two"))
        assert server.next_line() == QUIT
        server.say(message("bob", "bye bot"), GOODBYE)
        server.close()
        assert future.result(WAIT_SECONDS) == 0
        assert [re.sub(STAMPED, "", line) for line in printed.getvalue().splitlines()[-4:]] == [
            " <bot> one", " <bot> two", " <bob> bye bot", " *** Goodbye."]
    finally:
        server.close()


def test_a_piped_tls_client_hears_the_answers_to_its_last_commands(tls_server, certificates):
    code, out, err = finish(join_process(tls_server.port, "bot", b"/who\n/rooms\n",
                                         "--tls", "--cafile", certificates["ca"]))
    assert (code, err) == (0, "")
    answers = out.splitlines()[-3:]
    assert re.fullmatch(rf"{STAMPED} \*\*\* In lobby \(\d+\): .*\bbot\b.*", answers[0]), out
    assert re.fullmatch(rf"{STAMPED} \*\*\* lobby \(\d+\).*", answers[1]), out
    assert re.fullmatch(rf"{STAMPED} \*\*\* Goodbye\.", answers[2]), out


def test_tls_carries_lines_both_ways_at_once(start_server, certificates):
    server = start_server(certfile=certificates["cert"], keyfile=certificates["key"], **UNLIMITED)
    port = server.server_address[1]
    count = 2000
    flood = tls_peer(port, certificates["ca"])
    flood.join("flood")
    read_fd, write_fd = os.pipe()
    stdin = open(read_fd)
    try:
        with open(write_fd, "wb") as bot_input:
            future, printed = in_background(stdin, port=port, name="bot",
                                            tls=client_context(certificates["ca"]))
            flood.expect("bot joined")

            def type_lines() -> None:
                bot_input.write(b"".join(b"from bot %d\n" % n for n in range(count)))
                bot_input.flush()

            typing = threading.Thread(target=type_lines)
            typing.start()
            flood.send(b"".join(b"from flood %d\n" % n for n in range(count)))
            heard = [re.sub(STAMPED, "", flood.next_line()) for _ in range(count)]
            assert heard == [f" <bot> from bot {n}" for n in range(count)]
            wait_for(lambda: printed.getvalue().count("<flood>") == count, what="the bot to hear the flood")
            typing.join(WAIT_SECONDS)
        assert future.result(WAIT_SECONDS) == 0  # its input ended: it half-closed, the server closed
    finally:
        stdin.close()
        flood.close()
    shown = [re.sub(STAMPED, "", line) for line in printed.getvalue().splitlines() if "<flood>" in line]
    assert shown == [f" <flood> from flood {n}" for n in range(count)]


def test_tls_verification_failure_is_one_line_and_exit_1(tls_server):
    code, out, err = finish(join_process(tls_server.port, "alice", b"hi\n", "--tls"))
    assert code == 1
    assert err == (f"Error: TLS with 127.0.0.1:{tls_server.port} failed: certificate verify failed: "
                   "unable to get local issuer certificate "
                   "(use --cafile FILE to trust its CA, or --insecure)\n")


def test_insecure_tls_connects_without_verifying(tls_server):
    code, out, err = finish(join_process(tls_server.port, "alice", b"hi\n", "--tls", "--insecure"))
    assert (code, err) == (0, "")
    assert "*** Welcome, alice!" in out


def test_tls_at_a_plain_server_is_one_line_and_exit_1(server):
    port = server.server_address[1]
    code, out, err = finish(join_process(port, "alice", b"hi\n", "--tls"))
    assert code == 1
    assert re.fullmatch(rf"Error: TLS with 127\.0\.0\.1:{port} failed: [^\n]+: is it serving TLS\?\n",
                        err), err


def test_cafile_without_tls_is_one_line_and_exit_1(tmp_path):
    result = subprocess.run(join_command(7111, "alice", "--cafile", str(tmp_path / "ca.pem")),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO,
                            timeout=WAIT_SECONDS)
    assert (result.returncode, result.stderr) == (1, "Error: --cafile and --insecure need --tls\n")


def test_a_password_file_lets_a_piped_client_in(password_server, password_file):
    code, out, err = finish(join_process(password_server.port, "bot", b"hi\n",
                                         "--password-file", password_file))
    assert (code, err) == (0, "")
    assert "*** Welcome, bot!" in out


def test_the_password_can_come_from_the_environment(password_server):
    code, out, err = finish(join_process(password_server.port, "bot", b"hi\n",
                                         env=client_env(GROUPCHAT_PASSWORD=PASSWORD)))
    assert (code, err) == (0, "")
    assert "*** Welcome, bot!" in out


def test_a_wrong_password_is_one_line_and_exit_1(password_server):
    code, out, err = finish(join_process(password_server.port, "bot", b"hi\n",
                                         env=client_env(GROUPCHAT_PASSWORD="wrong")))
    assert code == 1
    assert err == "Error: the server refused the password (from --password-file or GROUPCHAT_PASSWORD)\n"
    assert out.splitlines()[-1] == "*** Sorry, wrong password; goodbye."


def test_a_terminal_is_asked_for_the_servers_password(password_server):
    with Terminal(password_server.port, "alice") as term:
        term.expect(r"\nPassword:")
        term.type(f"{PASSWORD}\r")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert PASSWORD not in term.text


def readme_example(heading: str) -> str:
    """The first ```python block of the README section under ``heading``."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(f"\n{heading}\n"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_bot_answers_and_leaves_through_the_real_server(server_process, tmp_path):
    server = server_process()
    bot_file = tmp_path / "echo_bot.py"
    bot_file.write_text(readme_example("## Bots and programs: `join --json`"))
    alice = Peer(server.address)
    try:
        alice.join("alice")
        # The example runs `groupchat`: the one installed next to this Python.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        bot = subprocess.Popen([sys.executable, str(bot_file), "127.0.0.1", str(server.port)], cwd=tmp_path,
                               env=client_env(PATH=path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        alice.expect(r"\*\*\* echo-bot joined$")
        alice.say("!echo hello there")
        alice.expect(rf"^{STAMPED} <echo-bot> hello there$")
        alice.say("!bye")
        alice.expect(r"\*\*\* echo-bot left \(quit\)$")
        assert finish(bot) == (0, "", "")
    finally:
        alice.close()


def lines_until(peer: Peer, text: str) -> list[str]:
    """The peer's next lines, up to the first that contains ``text``."""
    lines = [peer.next_line()]
    while text not in lines[-1]:
        lines.append(peer.next_line())
    return lines


def test_the_join_client_shows_what_a_text_connection_shows(server, open_pipe):
    """One room through the real server, seen by a text connection and by the client rendering
    events: line for line the same, times included, but for the private messages each got."""
    stdin, writer = open_pipe
    address = server.server_address
    text, sam, dave = Peer(address), Peer(address), Peer(address)
    try:
        text.join("tom")
        future, printed = in_background(stdin, port=address[1], name="jay")
        text.expect("jay joined")
        sam.join("sam")
        for line in ["hi all, tom and jay", "/me waves", "/msg jay psst", "/msg tom psst", "/nick samuel",
                     "/topic lunch at one"]:
            sam.say(line)
        sam.expect("set the topic")
        dave.join("dave")
        dave.say("/quit lunch")
        dave.expect_eof()
        sam.say("/join dev")
        heard_by_text = lines_until(text, "went to dev")
        wait_for(lambda: "went to dev" in printed.getvalue(), what="the join client to see samuel go")
        answered = ["/rooms", "/who", "/topic", "/search nothing"]  # the last one's answer ends them
        for line in answered:
            text.say(line)
        os.write(writer, "".join(line + "\n" for line in answered).encode())
        heard_by_text += lines_until(text, "No messages")
        wait_for(lambda: "No messages" in printed.getvalue(), what="the join client's answers")
        os.write(writer, b"/quit\n")
        assert future.result(WAIT_SECONDS) == 0
    finally:
        for peer in (text, sam, dave):
            peer.close()
    shown = printed.getvalue().splitlines()
    shown = shown[next(n for n, line in enumerate(shown) if "sam joined" in line):-1]  # to the Goodbye
    private = "(private) <sam> psst"
    assert [line for line in shown if private not in line] == [line for line in heard_by_text if private not in line]
    assert len([line for line in shown if private in line]) == len([line for line in heard_by_text if private in line]) == 1
    assert len(shown) == 14, shown


def test_json_answers_every_line_with_its_label_through_the_real_server(server_process):
    server = server_process()
    stdin = (b"hi\n/who\n/nosuch\n" + b'{"op": "send", "text": "/literal", "label": "mine"}\n'
             + b"x" * 4080 + b"\n" + b"/me is done\n")
    code, out, err = finish(join_process(server.port, "bot", stdin, "--json"))
    assert (code, err) == (0, "")
    got = events(out)
    assert [e["type"] for e in got[:2]] == ["mode", "prompt"] and "welcome" in [e["type"] for e in got]
    answers = [(e["type"], e.get("label"), e.get("code")) for e in got if e["type"] in ("ack", "error")]
    assert answers == [("ack", "c1", None), ("ack", "c2", None), ("error", "c3", jsonl.UNKNOWN_COMMAND),
                       ("ack", "mine", None), ("ack", "c4", None), ("ack", "c5", None)]  # a full plain line's text
    ids = [e["id"] for e in got if e["type"] == "ack" and e["label"] in ("c1", "mine")]
    assert ids == sorted(ids) and all(isinstance(i, int) for i in ids)
    assert next(e for e in got if e["type"] == "who")["names"] == ["bot"]
    assert got[-1]["type"] == "bye" and got[-1]["code"] == jsonl.BYE_QUIT
