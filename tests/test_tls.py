"""TLS on the server, with certificates made at test time (trustme)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time

import pytest
import trustme

from groupchat.errors import ServerStartError
from groupchat.server.settings import ServerSettings
from groupchat.server.tcp import ChatServer

from conftest import UNLIMITED, WAIT_SECONDS, Peer, wait_for


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(ca, tmp_path):
    """(certfile, keyfile, cafile) for a server at 127.0.0.1 / localhost."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    ca.cert_pem.write_to_path(cafile)
    return str(certfile), str(keyfile), str(cafile)


@pytest.fixture
def tls_server(start_server, cert_files):
    certfile, keyfile, _ = cert_files
    return start_server(certfile=certfile, keyfile=keyfile, handshake_timeout=1.0, **UNLIMITED)


class TLSPeer(Peer):
    """A Peer whose socket speaks TLS, verifying the server against the test CA."""

    def __init__(self, address: tuple, cafile: str, **context_options) -> None:
        context = ssl.create_default_context(cafile=cafile)
        for option, value in context_options.items():
            setattr(context, option, value)
        raw = socket.create_connection(address[:2], timeout=WAIT_SECONDS)
        super().__init__(address, sock=context.wrap_socket(raw, server_hostname="127.0.0.1"))


def test_two_tls_clients_chat(tls_server, cert_files):
    alice = TLSPeer(tls_server.server_address, cert_files[2])
    bob = TLSPeer(tls_server.server_address, cert_files[2])
    alice.join("alice")
    bob.join("bob")
    alice.say("over TLS")
    bob.expect("<alice> over TLS")
    assert alice.sock.version() in ("TLSv1.2", "TLSv1.3")
    alice.close()
    bob.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_is_refused(tls_server, cert_files):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cert_files[2])
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    except ValueError:
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(tls_server.server_address[:2], timeout=WAIT_SECONDS) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_tcp_and_a_stalled_handshake_on_the_tls_port_hold_nobody_up(tls_server, cert_files):
    alice = TLSPeer(tls_server.server_address, cert_files[2])
    alice.join("alice")
    bob = TLSPeer(tls_server.server_address, cert_files[2])
    bob.join("bob")
    plain = socket.create_connection(tls_server.server_address[:2], timeout=WAIT_SECONDS)
    plain.sendall(b"carol\nhello in plain text\n")
    stalled = socket.create_connection(tls_server.server_address[:2], timeout=WAIT_SECONDS)
    alice.say("still flowing")
    bob.expect("<alice> still flowing")
    assert_closed(plain)  # after its failed handshake
    assert_closed(stalled)  # at the handshake timeout
    plain.close()
    stalled.close()
    alice.close()
    bob.close()


def test_a_client_that_does_not_trust_the_certificate_fails_verification(tls_server, tmp_path):
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(tmp_path / "other.pem")
    with socket.create_connection(tls_server.server_address[:2], timeout=WAIT_SECONDS) as raw:
        context = ssl.create_default_context(cafile=str(tmp_path / "other.pem"))
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed (Debian package openssl)")
def test_openssl_s_client_is_a_working_client(tls_server, cert_files):
    alice = TLSPeer(tls_server.server_address, cert_files[2])
    alice.join("alice")
    port = tls_server.server_address[1]
    client = subprocess.Popen(
        ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}", "-CAfile", cert_files[2],
         "-verify_return_error"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        client.stdin.write(b"ossl\nhello from openssl\n")
        client.stdin.flush()
        alice.expect("<ossl> hello from openssl")
    finally:
        client.kill()
        client.communicate()
    alice.close()


def test_bad_certificate_files_are_one_clear_error(tmp_path, cert_files):
    with pytest.raises(ServerStartError, match="no such file"):
        ChatServer(("127.0.0.1", 0), ServerSettings(certfile=str(tmp_path / "missing.pem")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ServerStartError, match="cannot use certificate"):
        ChatServer(("127.0.0.1", 0), ServerSettings(certfile=str(garbage)))
    with pytest.raises(ServerStartError, match="cannot use certificate"):  # key of another cert
        ChatServer(("127.0.0.1", 0), ServerSettings(certfile=cert_files[0], keyfile=cert_files[2]))


def assert_closed(sock: socket.socket) -> None:
    """Read until the server closes (a TLS alert may come first); a timeout fails the test."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:  # closed with our plain text unread: RST, which is closed too
        pass


def test_a_tls_client_on_a_plain_port_is_told_in_one_line_and_never_named(server):
    context = ssl.create_default_context(cafile=None)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(server.server_address[:2], timeout=WAIT_SECONDS) as raw:
        with pytest.raises(ssl.SSLError):  # the server answers in plain text, not TLS
            context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert len(server.registry.named()) == 0
    plain = Peer(server.server_address)
    raw_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\n"
    assert plain.next_line() == "*** What is your name?"
    plain.send(raw_hello)
    assert plain.expect_eof() == [
        "*** Sorry, this server does not speak TLS (connect without --tls); goodbye."]
    plain.close()


def test_a_client_hello_trickled_byte_by_byte_meets_the_handshake_deadline(tls_server):
    hello = socket.create_connection(tls_server.server_address[:2], timeout=WAIT_SECONDS)
    started = time.monotonic()
    try:  # a byte every 0.05 s: no single read ever waits the 1 s deadline
        for byte in b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200):
            hello.send(bytes([byte]))
            time.sleep(0.05)
            if time.monotonic() - started > 3:
                break
        hello.settimeout(1.0)
        assert hello.recv(1) == b""
    except (BrokenPipeError, ConnectionResetError):  # closed while it was still sending
        pass
    assert time.monotonic() - started < 3
    hello.close()
    wait_for(lambda: len(tls_server.registry) == 0, what="no connection left")
