"""The ``groupchat`` command: usage through CliRunner, and the real server as a subprocess."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import socket
import subprocess

import pytest
from click.testing import CliRunner

from groupchat.cli import cli
from groupchat.net import format_address

from conftest import GROUPCHAT, REPO, WAIT_SECONDS, Peer


def test_help_lists_both_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output and "join" in result.output


def test_serve_help_shows_the_default_port():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "7111" in result.output


@pytest.mark.parametrize("args", [["join"], ["join", "localhost", "70000"],
                                  ["serve", "--port", "-1"], ["serve", "--port", "http"]])
def test_usage_mistakes_are_one_usage_error(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Error:" in result.output and "Traceback" not in result.output


def test_join_help_offers_json_for_programs():
    result = CliRunner().invoke(cli, ["join", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.output and "JSON Lines" in result.output


def test_join_json_keeps_stdout_for_events_even_when_it_cannot_connect():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        port = closed.getsockname()[1]
        result = run_cli("join", "127.0.0.1", str(port), "--json", "--name", "bot")
    assert result.stdout == ""
    assert_one_line_error(result, "connection refused")


@pytest.mark.parametrize("target", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "::1 {port}",
                                    "localhost {port}"])
def test_join_takes_the_port_after_the_host_as_people_type_it(server_process, target):
    server = server_process("--host", "::", "--rate", "0")
    result = run_cli("join", *target.format(port=server.port).split(), "--name", "ada", input="hi\n")
    if result.returncode and "cannot reach" in result.stderr:
        pytest.skip("no IPv6 loopback here")
    assert result.returncode == 0, result.stderr
    host, *port = target.format(port=server.port).split()
    assert result.stdout.startswith(f"Connected to {format_address((host, *port)) if port else host}\n"), result.stdout
    assert "<ada> hi" in result.stdout


@pytest.mark.parametrize("args, error", [
    (["127.0.0.1:7400", "7500"], "two ports given: 7400 in HOST, and 7500"),
    (["[::1", ], "an IPv6 address goes in brackets"),
    (["localhost:http"], "'http' is not a port"),
    (["one.example,two.example:7400", "7500"], "two ports given: 7400 in HOST, and 7500"),
    (["127.0.0.1:7400,,127.0.0.1:7401"], "'127.0.0.1:7400,,127.0.0.1:7401' has an empty address"),
    (["127.0.0.1,[::1:7400"], "an IPv6 address goes in brackets"),
])
def test_join_says_what_is_wrong_with_its_address(args, error):
    assert_one_line_error(run_cli("join", *args, "--name", "ada"), error)


def closed_ports(count: int) -> list[int]:
    """Loopback ports that nothing listens on, found by binding and letting go (connecting is refused)."""
    probes = [socket.socket() for _ in range(count)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def test_join_with_several_addresses_joins_the_first_that_answers(server_process):
    server = server_process("--rate", "0")
    refused, = closed_ports(1)
    result = run_cli("join", f"127.0.0.1:{refused},localhost:{server.port}", "--name", "ada", input="hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Connected to localhost:{server.port}\n"), result.stdout
    assert "<ada> hi" in result.stdout


def test_join_where_no_address_answers_names_each_in_one_line():
    ports = closed_ports(2)
    result = run_cli("join", ",".join(f"127.0.0.1:{port}" for port in ports), "--name", "ada")
    assert_one_line_error(result, "no server answered: ")
    for port in ports:
        assert f"connection refused: is a server running on 127.0.0.1:{port}?" in result.stderr


def test_join_without_a_port_uses_7111():
    result = CliRunner().invoke(cli, ["join", "--help"])
    assert "7111" in result.output
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 7111)) == 0:
            pytest.skip("something listens on port 7111 here")
    assert_one_line_error(run_cli("join", "127.0.0.1", "--name", "ada"), "127.0.0.1:7111")


def test_two_raw_clients_chat_through_the_real_server(server_process):
    server = server_process()
    alice, bob = Peer(server.address), Peer(server.address)
    try:
        alice.join("alice")
        bob.join("bob")
        alice.expect("bob joined")
        bob.say("hi from bob")
        alice.expect("<bob> hi from bob")
    finally:
        alice.close()
        bob.close()
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert code == 0
    assert "alice joined" in err and "bob joined" in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_telling_every_client(server_process, signum):
    server = server_process()
    alice = Peer(server.address)
    try:
        alice.join("alice")
        server.proc.send_signal(signum)
        assert alice.expect_eof()[-1].endswith("*** Server is shutting down.")
    finally:
        alice.close()
    code, err = server.finish()
    assert code == 0
    assert "Traceback" not in err


def test_ctrl_d_on_the_server_terminal_stops_it(server_process):
    controller, terminal = pty.openpty()
    try:
        server = server_process(stdin=terminal)
        alice = Peer(server.address)
        alice.join("alice")
        os.write(controller, b"\x04")  # Ctrl-D at the start of a line: end of input
        assert alice.expect_eof()[-1].endswith("*** Server is shutting down.")
        alice.close()
        assert server.finish()[0] == 0
    finally:
        os.close(controller)
        os.close(terminal)


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    if "input" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    return subprocess.run(GROUPCHAT + list(args), capture_output=True, text=True, cwd=REPO,
                          timeout=WAIT_SECONDS, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and text in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert_one_line_error(result, f"port {port} is already in use")


def test_privileged_port_is_one_line_suggesting_a_port_above_1023():
    """``serve --port 111`` as a user who may not bind below 1024 (root drops the capability)."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv cannot be denied a low port")
        prefix = ["setpriv", "--bounding-set", "-net_bind_service"]
    result = subprocess.run(prefix + GROUPCHAT + ["serve", "--port", "111"], capture_output=True,
                            text=True, cwd=REPO, timeout=WAIT_SECONDS, stdin=subprocess.DEVNULL)
    assert_one_line_error(result, "permission denied to listen on port 111")
    assert "above 1023" in result.stderr


def test_unknown_listen_host_is_one_line():
    assert_one_line_error(run_cli("serve", "--host", "no-such-host.invalid", "--port", "0"),
                          "unknown host")


def test_python_dash_m_and_version():
    result = run_cli("--version")
    assert result.returncode == 0 and "groupchat" in result.stdout


def test_op_password_file_enables_operators(server_process, tmp_path):
    secret = tmp_path / "op"
    secret.write_text("s3cret\n")
    server = server_process("--op-password-file", str(secret))
    alice = Peer(server.address)
    try:
        alice.join("alice")
        alice.say("/op s3cret")
        alice.expect(r"\*\*\* You are now an operator\.$")
    finally:
        alice.close()


@pytest.mark.parametrize("content, message", [(None, "cannot read the operator password file"),
                                              ("\n", "is empty")])
def test_unusable_op_password_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "op"
    if content is not None:
        path.write_text(content)
    assert_one_line_error(run_cli("serve", "--port", "0", "--op-password-file", str(path)), message)
