"""The join client: its pure decisions, then the real client against a scripted server on loopback.

The scripted server is a real listening socket played line by line by the test, so each
refusal, welcome and close comes exactly when the test says.  The client runs in a thread
(piped input), as ``python -m groupchat join`` (exit codes, one-line errors) and in a real
pseudo-terminal (the prompt); the last test joins the real ``groupchat serve``.
"""

from __future__ import annotations

import io
import os
import re
import select
import socket
import subprocess
import threading
import time
from concurrent.futures import Future
from typing import Iterator, Optional

import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from conftest import GROUPCHAT, REPO, WAIT_SECONDS
from groupchat import client
from groupchat.client import Handshake, LineReader, Me, Step, connect, outgoing_lines, run_client
from groupchat.errors import ConnectError, ConnectionLostError
from groupchat.protocol import (
    NAME_PROMPT,
    PASSWORD_PROMPT,
    LineTooLong,
    clean_text,
    encode_line,
    render_notice,
    render_refusal,
    render_welcome,
)

pytestmark = pytest.mark.timeout(30)

STAMPED = r"\[\d\d:\d\d\]"
# The prompt, drawn again: type Ctrl-D only after it, for between prompts (and while a line
# is printed above one) the terminal is in cooked mode, where Ctrl-D is not a key.
# prompt_toolkit may draw the prompt's space as a cursor move.
PROMPT = r"\n> ?"


class ScriptedServer:
    """The server's side of one connection, played by the test on a real loopback socket."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family)
        self.listener.settimeout(WAIT_SECONDS)
        self.port = self.listener.getsockname()[1]
        self.conn: Optional[socket.socket] = None
        self._lines: Optional[LineReader] = None

    def accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(WAIT_SECONDS)
        self._lines = LineReader(self.conn.recv)

    def say(self, *lines: str) -> None:
        self.conn.sendall(b"".join(encode_line(line) for line in lines))

    def next_line(self) -> Optional[str]:
        """The client's next line; None once it has closed its side; TimeoutError if it is silent."""
        return self._lines.read_line()

    def welcome(self, name: str) -> None:
        """Accept the client and let it in as ``name``."""
        self.accept()
        self.say(NAME_PROMPT)
        assert self.next_line() == name
        self.say(render_welcome(name, ""))

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


def in_background(stdin: io.TextIOBase, **kwargs) -> tuple[Future, io.StringIO]:
    """``run_client`` in a thread with piped ``stdin``: its future result, and what it printed."""
    printed = io.StringIO()
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(run_client(stdin=stdin, stdout=printed, **kwargs))
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


def join_command(port: int, name: str, host: str = "127.0.0.1") -> list[str]:
    return GROUPCHAT + ["join", host, str(port), "--name", name]


def join_process(port: int, name: str, stdin: bytes) -> subprocess.Popen:
    """``groupchat join`` as a subprocess whose stdin is ``stdin``, already written and closed."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, stdin)  # small enough for the pipe's buffer
    os.close(write_fd)
    try:
        return subprocess.Popen(join_command(port, name), stdin=read_fd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)
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

    def __init__(self, port: int, name: str) -> None:
        self.fd, child_fd = os.openpty()
        # No cursor-position queries: nothing here would answer them.
        env = dict(os.environ, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
        self.proc = subprocess.Popen(join_command(port, name), stdin=child_fd, stdout=child_fd,
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
    def text(self) -> str:
        """All it has shown, without escape sequences; lines kept apart."""
        shown = self._shown.decode("utf-8", errors="replace")
        return "\n".join(clean_text(line) for line in shown.split("\n"))

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

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


# -- the pure parts ------------------------------------------------------------------------

def test_handshake_sends_the_name_when_asked_and_ends_at_the_welcome():
    handshake = Handshake(" alice ")
    assert handshake.feed(NAME_PROMPT) is Step.SEND_NAME
    assert handshake.name == "alice"
    assert handshake.feed(render_welcome("alice", "bob")) is Step.JOINED


def test_handshake_answers_a_password_prompt():
    assert Handshake("alice").feed(PASSWORD_PROMPT) is Step.SEND_PASSWORD


def test_handshake_asks_for_another_name_only_after_a_refusal():
    handshake = Handshake("bob")
    handshake.feed(NAME_PROMPT)
    assert handshake.feed(render_refusal('the name "bob" is taken')) is Step.SHOW
    assert handshake.refusal == 'the name "bob" is taken'
    assert handshake.feed(NAME_PROMPT) is Step.ASK_ANOTHER_NAME
    handshake.rename("rob")
    assert handshake.refusal is None
    assert handshake.feed(NAME_PROMPT) is Step.SEND_NAME


@pytest.mark.parametrize("line", ["*** Server is full, try later", "SSH-2.0-OpenSSH_9.6", LineTooLong(4096)])
def test_handshake_shows_anything_unexpected(line):
    assert Handshake("alice").feed(line) is Step.SHOW


def test_your_lines_are_echoed_as_the_others_see_them():
    me = Me("alice")
    assert me.echo("hi there", "14:03") == "[14:03] <alice> hi there"
    assert me.echo("/ME  waves ", "14:03") == "[14:03] * alice waves"
    assert me.echo("//slash", "14:03") == "[14:03] <alice> /slash"
    for answered_by_the_server in ["/who", "/msg bob psst", "/me", "/nick al", "x" * 5000]:
        assert me.echo(answered_by_the_server, "14:03") is None


def test_your_name_follows_your_own_nick_only():
    me = Me("alice")
    me.heard(render_notice("14:03", "bob is now known as rob"))
    me.heard("[14:03] <bob> alice is now known as mallory")
    assert me.name == "alice"
    me.heard(render_notice("14:03", "alice is now known as al"))
    assert me.name == "al"


def test_only_quit_makes_the_close_expected():
    me = Me("alice")
    for line in ["quit", "//quit", "/quitting", "/who"]:
        me.sent(line)
    assert not me.quitting
    me.sent("/QUIT bye all")
    assert me.quitting


def test_outgoing_lines_split_clean_and_skip_blanks():
    assert outgoing_lines("one\r\ntwo\x07\n\n \t\n\x1b[31mred") == ["one", "two", "red"]


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
    with connect("127.0.0.1", scripted.port) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_connection_refused_says_to_check_for_a_server(closed_port):
    with pytest.raises(ConnectError) as error:
        connect("127.0.0.1", closed_port)
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
    monkeypatch.setattr(client, "CONNECT_TIMEOUT_SECONDS", 0.2)
    future, _ = in_background(piped(b"hi\n"), host="127.0.0.1", port=scripted.port, name="alice")
    scripted.accept()
    with pytest.raises(ConnectError, match="no answer within 0.2 s: is it a groupchat server"):
        future.result(WAIT_SECONDS)


def test_ipv6():
    try:
        server = ScriptedServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        future, printed = in_background(piped(b""), host="::1", port=server.port, name="alice")
        server.welcome("alice")
        assert server.next_line() is None
        server.close()
        assert future.result(WAIT_SECONDS) == 0
        assert printed.getvalue().startswith(f"Connected to server at (::1, {server.port})\n")
    finally:
        server.close()


# -- piped input ---------------------------------------------------------------------------

def test_piped_lines_all_go_in_order_and_the_client_stays_for_the_servers_last_words(scripted):
    future, printed = in_background(piped(b"one\ntwo\n\n  \nthree"), host="127.0.0.1",
                                    port=scripted.port, name="bot")
    scripted.welcome("bot")
    assert [scripted.next_line() for _ in range(4)] == ["one", "two", "three", None]
    scripted.conn.sendall(b"[12:00] <bob> " + b"x" * client.MAX_SERVER_LINE_BYTES + b"\n")
    scripted.say("[12:00] <bob> bye bot")
    scripted.close()
    assert future.result(WAIT_SECONDS) == 0
    assert printed.getvalue().splitlines() == [
        f"Connected to server at (127.0.0.1, {scripted.port})",
        "*** Welcome, bot! Nobody else is here yet.",
        f"(a line longer than {client.MAX_SERVER_LINE_BYTES} bytes from the server was left out)",
        "[12:00] <bob> bye bot",
    ]


def test_a_piped_line_too_long_is_not_sent_however_long(scripted, capfd):
    future, _ = in_background(piped(b"x" * 1_000_000 + b"\nok\n"), host="127.0.0.1",
                              port=scripted.port, name="bot")
    scripted.welcome("bot")
    assert [scripted.next_line(), scripted.next_line()] == ["ok", None]
    scripted.close()
    assert future.result(WAIT_SECONDS) == 0
    assert "a line longer than 4096 bytes was not sent" in capfd.readouterr().err


def test_the_server_leaving_ends_a_piped_client_even_while_its_input_is_quiet(scripted, open_pipe):
    stdin, _ = open_pipe
    future, _ = in_background(stdin, host="127.0.0.1", port=scripted.port, name="bot")
    scripted.welcome("bot")
    scripted.close()
    with pytest.raises(ConnectionLostError, match="^the server closed the connection$"):
        future.result(WAIT_SECONDS)


def test_quit_ends_a_piped_client_cleanly_even_with_input_left(scripted, open_pipe):
    stdin, writer = open_pipe
    future, printed = in_background(stdin, host="127.0.0.1", port=scripted.port, name="bot")
    scripted.welcome("bot")
    os.write(writer, b"/quit\n")
    assert scripted.next_line() == "/quit"
    scripted.say(render_notice("12:00", "Goodbye."))
    scripted.close()
    assert future.result(WAIT_SECONDS) == 0
    assert printed.getvalue().endswith("[12:00] *** Goodbye.\n")


def test_a_close_during_the_handshake_says_the_servers_reason(scripted):
    future, printed = in_background(piped(b""), host="127.0.0.1", port=scripted.port, name="bot")
    scripted.accept()
    scripted.say(render_refusal("this address is banned"))
    scripted.close()
    with pytest.raises(ConnectionLostError, match="before letting you in: this address is banned$"):
        future.result(WAIT_SECONDS)
    assert "*** Sorry, this address is banned." in printed.getvalue()


def test_a_password_is_given_before_the_name(scripted):
    future, _ = in_background(piped(b""), host="127.0.0.1", port=scripted.port, name="bot",
                              password="s3cret")
    scripted.accept()
    scripted.say(PASSWORD_PROMPT)
    assert scripted.next_line() == "s3cret"
    scripted.say(NAME_PROMPT)
    assert scripted.next_line() == "bot"
    scripted.say(render_welcome("bot", ""))
    assert scripted.next_line() is None
    scripted.close()
    assert future.result(WAIT_SECONDS) == 0


def test_a_password_nobody_can_give_is_one_error(scripted):
    future, _ = in_background(piped(b"hi\n"), host="127.0.0.1", port=scripted.port, name="bot")
    scripted.accept()
    scripted.say(PASSWORD_PROMPT)
    with pytest.raises(ConnectError, match="wants a password, and stdin is not a terminal"):
        future.result(WAIT_SECONDS)
    assert scripted.next_line() is None


def test_a_server_sending_no_newlines_is_cut_off(scripted, open_pipe):
    stdin, _ = open_pipe
    future, _ = in_background(stdin, host="127.0.0.1", port=scripted.port, name="bot")
    scripted.welcome("bot")
    try:
        scripted.conn.sendall(b"x" * (32 * client.MAX_SERVER_LINE_BYTES))
    except ConnectionError:
        pass  # the client hung up before all of it was sent
    with pytest.raises(ConnectionLostError, match="^the server sent more than .* without a newline$"):
        future.result(WAIT_SECONDS)


def test_join_piped_sends_every_line_and_exits_0_when_the_server_closes(scripted):
    proc = join_process(scripted.port, "bot", stdin=b"build 1234 passed\n\nsecond line\n//third\n")
    scripted.welcome("bot")
    assert [scripted.next_line() for _ in range(4)] == ["build 1234 passed", "second line", "//third", None]
    scripted.say("[12:00] <alice> thanks bot")
    scripted.close()
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"Connected to server at (127.0.0.1, {scripted.port})",
                                "*** Welcome, bot! Nobody else is here yet.",
                                "[12:00] <alice> thanks bot"]


def test_join_piped_with_a_refused_name_exits_1_with_the_reason(scripted):
    proc = join_process(scripted.port, "bob", stdin=b"hi\n")
    scripted.accept()
    scripted.say(NAME_PROMPT)
    assert scripted.next_line() == "bob"
    scripted.say(render_refusal('the name "bob" is taken'), NAME_PROMPT)
    assert scripted.next_line() is None
    code, out, err = finish(proc)
    assert code == 1
    assert err == ('Error: the server refused the name "bob": the name "bob" is taken; '
                   "choose another with --name\n")
    assert out.splitlines()[-1] == '*** Sorry, the name "bob" is taken.'


# -- at a terminal -------------------------------------------------------------------------

def test_incoming_lines_do_not_garble_a_half_typed_line_and_ctrl_d_leaves(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("hel")
        term.expect(r"> ?hel")
        scripted.say("[12:00] <bob> one", "[12:00] <bob> two")
        term.expect(r"<bob> one.*<bob> two.*> ?hel")  # the half line is drawn again below them
        term.type("lo\r")
        assert scripted.next_line() == "hello"
        term.expect(rf"{STAMPED} <alice> hello")
        term.type("/me waves\r")
        assert scripted.next_line() == "/me waves"
        term.expect(rf"{STAMPED} \* alice waves{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert scripted.next_line() is None
        assert "Traceback" not in term.text


def test_ctrl_c_leaves_with_exit_0(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("never sent")
        term.type("\x03")
        assert term.wait() == 0
        assert scripted.next_line() is None
        assert "Traceback" not in term.text


def test_a_refused_name_at_a_terminal_asks_for_another(scripted):
    with Terminal(scripted.port, "bob") as term:
        scripted.accept()
        scripted.say(NAME_PROMPT)
        assert scripted.next_line() == "bob"
        scripted.say(render_refusal('the name "bob" is taken'), NAME_PROMPT)
        term.expect(r'\*\*\* Sorry, the name "bob" is taken\..*\nName:')
        term.type("rob\r")
        assert scripted.next_line() == "rob"
        scripted.say(render_welcome("rob", "bob"))
        term.expect(rf"Welcome, rob! Here now: bob\..*{PROMPT}")
        term.type("hi\r")
        assert scripted.next_line() == "hi"
        term.expect(rf"{STAMPED} <rob> hi{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0


def test_a_password_is_asked_at_a_terminal_and_not_shown(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.accept()
        scripted.say(PASSWORD_PROMPT)
        term.expect(r"\nPassword:")
        term.type("s3cret\r")
        assert scripted.next_line() == "s3cret"
        scripted.say(NAME_PROMPT)
        assert scripted.next_line() == "alice"
        scripted.say(render_welcome("alice", ""))
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert "s3cret" not in term.text


def test_the_server_leaving_interrupts_the_prompt_and_exits_1(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type("half a li")
        term.expect(r"> ?half a li")
        scripted.close()
        assert term.wait() == 1
        assert "Error: the server closed the connection" in term.text
        assert "Traceback" not in term.text


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
