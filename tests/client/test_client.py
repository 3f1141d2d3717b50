"""The join client: its pure decisions, then the real client against a scripted server on loopback.

The scripted server is a real listening socket played line by line by the test, so each
refusal, welcome and close comes exactly when the test says.  The client runs in a thread
(piped input), as ``python -m groupchat join`` (exit codes, one-line errors) and in a real
pseudo-terminal (the prompt, colours, Tab, the up arrow); the last tests join the real
``groupchat serve``, with TLS (certificates made by trustme for the run) and passwords.
"""

from __future__ import annotations

import io
import os
import re
import select
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import Future
from typing import Iterator, Optional

import pytest
import trustme
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from groupchat.client import terminal as client
from groupchat.client.terminal import Handshake, LineReader, Me, Step, connect, outgoing_lines, run_client
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
from groupchat.tls import client_context, server_context

from conftest import GROUPCHAT, REPO, UNLIMITED, WAIT_SECONDS, Peer, ServerProcess, wait_for

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


def join_command(port: int, name: str, *options: str, host: str = "127.0.0.1") -> list[str]:
    return GROUPCHAT + ["join", host, str(port), "--name", name, *options]


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

    def __init__(self, port: int, name: str, *options: str, **env: str) -> None:
        self.fd, child_fd = os.openpty()
        # No cursor-position queries: nothing here would answer them.
        env = client_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", **env)
        self.proc = subprocess.Popen(join_command(port, name, *options), stdin=child_fd, stdout=child_fd,
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


def test_a_refusal_answers_the_password_until_the_name_is_asked():
    handshake = Handshake("bob")
    handshake.feed(PASSWORD_PROMPT)
    assert handshake.feed(render_refusal("wrong password; goodbye")) is Step.PASSWORD_REFUSED
    handshake = Handshake("bob")
    handshake.feed(PASSWORD_PROMPT)
    assert handshake.feed(NAME_PROMPT) is Step.SEND_NAME
    assert handshake.feed(render_refusal('the name "bob" is taken')) is Step.SHOW


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


def test_a_tls_handshake_with_no_answer_fails_instead_of_hanging(scripted, monkeypatch):
    monkeypatch.setattr(client, "CONNECT_TIMEOUT_SECONDS", 0.2)
    with pytest.raises(ConnectError) as error:
        connect("127.0.0.1", scripted.port, tls=client_context())
    assert str(error.value) == (f"TLS with 127.0.0.1:{scripted.port} failed: no answer within 0.2 s: "
                                "is it serving TLS?")


def test_a_plain_client_at_a_tls_server_is_told_it_may_need_tls(tls_server, monkeypatch):
    monkeypatch.setattr(client, "CONNECT_TIMEOUT_SECONDS", 0.2)
    future, _ = in_background(piped(b"hi\n"), host="127.0.0.1", port=tls_server.port, name="alice")
    with pytest.raises(ConnectError, match=r"no answer within 0\.2 s: is it a groupchat server "
                                           r"\(one that serves TLS needs --tls\)\?$"):
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


def test_a_refused_password_ends_the_handshake_at_once(scripted):
    future, printed = in_background(piped(b""), host="127.0.0.1", port=scripted.port, name="bot",
                                    password="wrong")
    scripted.accept()
    scripted.say(PASSWORD_PROMPT)
    assert scripted.next_line() == "wrong"
    scripted.say(render_refusal("wrong password; goodbye"))  # and the server keeps it open a while
    with pytest.raises(ConnectError, match=r"^the server refused the password \(from --password-file "
                                           r"or GROUPCHAT_PASSWORD\)$"):
        future.result(WAIT_SECONDS)
    assert printed.getvalue().endswith("*** Sorry, wrong password; goodbye.\n")


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


def test_a_password_is_asked_at_a_terminal_and_neither_shown_nor_recalled(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.accept()
        scripted.say(PASSWORD_PROMPT)
        term.expect(r"\nPassword:")
        term.type(f"{PASSWORD}\r")
        assert scripted.next_line() == PASSWORD
        scripted.say(NAME_PROMPT)
        assert scripted.next_line() == "alice"
        scripted.say(render_welcome("alice", ""))
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        term.type(UP_ARROW + "next\r")  # had the password been recalled, it would come first
        assert scripted.next_line() == "next"
        term.expect(rf"<alice> next{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert PASSWORD not in term.text


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


def test_lines_are_coloured_and_mentions_ring_at_a_terminal_and_never_in_a_pipe(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        scripted.say("[12:00] <bob> lunch, alice?")
        term.expect(rf"<bob> lunch, alice\?{PROMPT}")
        assert term.colours, term.raw
        assert "\a" in term.raw
        term.type("\x04")
        assert term.wait() == 0
    piped_server = ScriptedServer()
    try:
        proc = join_process(piped_server.port, "alice", stdin=b"hi\n")
        piped_server.welcome("alice")
        assert [piped_server.next_line(), piped_server.next_line()] == ["hi", None]  # all sent
        piped_server.say("[12:00] <bob> lunch, alice?")
        piped_server.close()
        code, out, err = finish(proc)
    finally:
        piped_server.close()
    assert (code, err) == (0, "")
    assert out.endswith("*** Welcome, alice! Nobody else is here yet.\n[12:00] <bob> lunch, alice?\n")
    assert "\x1b" not in out and "\a" not in out


def test_no_color_and_no_bell_at_a_terminal(scripted):
    with Terminal(scripted.port, "alice", "--no-bell", NO_COLOR="1") as term:
        scripted.welcome("alice")
        term.expect(rf"Welcome, alice!.*{PROMPT}")
        scripted.say("[12:00] <bob> lunch, alice?", "[12:00] (private) <bob> psst")
        term.expect(rf"<bob> lunch, alice\?.*\(private\) <bob> psst{PROMPT}")
        term.type("hi bob\r")
        term.expect(rf"<alice> hi bob{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0
        assert term.colours == []
        assert "\a" not in term.raw


def test_tab_completes_commands_and_names_and_up_recalls_your_last_line(scripted):
    with Terminal(scripted.port, "alice") as term:
        scripted.accept()
        scripted.say(NAME_PROMPT)
        assert scripted.next_line() == "alice"
        scripted.say(render_welcome("alice", "bob"))
        term.expect(rf"Welcome, alice! Here now: bob\.{PROMPT}")
        term.type("/wh\t")
        term.expect(r"> ?/who")
        term.type("\r")
        assert scripted.next_line() == "/who"
        scripted.say(render_notice("12:00", "In lobby (2): alice, bob. 2 online in all."))
        term.expect(rf"In lobby.*{PROMPT}")
        term.type("/msg bo\t")
        term.expect(r"> ?/msg bob")
        term.type(" psst\r")
        assert scripted.next_line() == "/msg bob psst"
        term.expect(rf"In lobby.*{PROMPT}")  # /msg is echoed by the server, not the client
        term.type("first\r")
        assert scripted.next_line() == "first"
        term.expect(rf"<alice> first{PROMPT}")
        term.type(UP_ARROW + "\r")
        assert scripted.next_line() == "first"
        term.expect(rf"<alice> first.*<alice> first{PROMPT}")
        term.type("\x04")
        assert term.wait() == 0


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


def test_a_piped_tls_client_half_closes_and_still_hears_the_servers_last_words(certificates):
    server = ScriptedServer(tls=server_context(certificates["cert"], certificates["key"]))
    try:
        future, printed = in_background(piped(b"one\ntwo\n"), host="127.0.0.1", port=server.port, name="bot",
                                        tls=client_context(certificates["ca"]))
        server.welcome("bot")
        assert [server.next_line() for _ in range(3)] == ["one", "two", None]
        server.say("[12:00] <bob> bye bot")
        server.close()
        assert future.result(WAIT_SECONDS) == 0
        assert printed.getvalue().splitlines()[-2:] == ["*** Welcome, bot! Nobody else is here yet.",
                                                        "[12:00] <bob> bye bot"]
    finally:
        server.close()


def test_a_piped_tls_client_hears_the_answers_to_its_last_commands(tls_server, certificates):
    code, out, err = finish(join_process(tls_server.port, "bot", b"/who\n/rooms\n",
                                         "--tls", "--cafile", certificates["ca"]))
    assert (code, err) == (0, "")
    answers = out.splitlines()[-2:]  # the server answers after the client's close_notify, too
    assert re.fullmatch(rf"{STAMPED} \*\*\* In lobby \(\d+\): .*\bbot\b.*", answers[0]), out
    assert re.fullmatch(rf"{STAMPED} \*\*\* lobby \(\d+\).*", answers[1]), out


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
            future, printed = in_background(stdin, host="127.0.0.1", port=port, name="bot",
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
