"""Network helpers on real sockets."""

from __future__ import annotations

import socket

import pytest

from groupchat.net import IDLE_RECV_BYTES, Reads

pytestmark = pytest.mark.timeout(10)


def test_reads_ask_for_little_while_idle_and_for_more_once_a_read_comes_back_full():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reads = Reads(8 * IDLE_RECV_BYTES)
        theirs.sendall(b"hi\n")
        assert reads.recv(ours) == b"hi\n"
        theirs.sendall(b"x" * (4 * IDLE_RECV_BYTES))
        assert len(reads.recv(ours)) == IDLE_RECV_BYTES  # a blocked read held no more than this
        assert len(reads.recv(ours)) == 3 * IDLE_RECV_BYTES  # busy: the rest in one read
        theirs.sendall(b"bye\n")
        assert reads.recv(ours) == b"bye\n"
        theirs.sendall(b"y" * (2 * IDLE_RECV_BYTES))
        assert len(reads.recv(ours)) == IDLE_RECV_BYTES  # idle again after a read that was not full
