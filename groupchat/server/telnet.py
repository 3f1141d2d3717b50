"""Telnet's protocol at the edge of the wire (RFC 854, 855): its commands taken out of the text.

A telnet client sends plain lines until something makes it speak telnet: then a command
starts with the byte IAC (255), which never occurs in UTF-8, so a stream without it is
passed through untouched and ``nc`` or groupchat's own client see no difference.  The
server never speaks telnet first: nothing tells a telnet client apart before it does, and
IAC bytes would be garbage on an ``nc`` screen.

Once a client has spoken telnet, the server asks it to send 8-bit data (``DO BINARY``):
outside binary mode, telnet strips the top bit of each byte to look for its special keys,
so the ``9c`` of ✓ (``e2 9c 93``) reads as Ctrl-\\ and is sent as ``IAC BRK`` instead.
Such a command in the middle of a UTF-8 character can be nothing but that lost byte, so
it is put back (:data:`KEY_COMMANDS`).  Every other option is refused, in particular:

- the server sending binary: telnet would then stop turning the server's "\\n" into a new
  line on its screen (each line would start where the last one ended), and UTF-8 already
  shows whole without it;
- SGA and ECHO: telnet stays in line mode, where the terminal edits the line and the
  server gets it whole;
- TIMING-MARK: ``WONT`` is an answer too, and telnet, which drops what it receives while
  it waits for one (after Ctrl-C or a lost byte), shows incoming lines again.

A request is answered only when it asks for a change, so negotiation cannot loop.
Subnegotiations (``SB`` ... ``SE``) are skipped; a sequence may be split across reads.
"""

from __future__ import annotations

from groupchat.errors import NoNewlineError

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
IP, AO, BRK, ABORT, SUSP = 244, 245, 243, 238, 237
BINARY = 0
# The byte telnet drops, outside binary mode, for each command it sends in its place:
# the key's control character (stty's defaults) with the top bit set again.
KEY_COMMANDS = {IP: 0x83, BRK: 0x9C, ABORT: 0x9C, SUSP: 0x9A, AO: 0x8F}
# Commands and subnegotiations with no line between them, past which a peer is cut off as
# one sending no newlines would be: they are not text and LineBuffer never sees them.
MAX_COMMAND_BYTES = 64 * 1024

_IAC = bytes([IAC])
_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)


class TelnetFilter:
    """One connection's incoming bytes with telnet's commands taken out.

    :meth:`feed` returns the text and the answers to send back, in order:

    >>> telnet = TelnetFilter()
    >>> telnet.feed(b"hi\\n")
    (b'hi\\n', b'')
    >>> telnet.feed(b"\\xe2\\xff\\xf3\\xff\\xfd\\x06\\x93\\r\\n")  # ✓ from telnet, not yet binary
    (b'\\xe2\\x9c\\x93\\r\\n', b'\\xff\\xfd\\x00\\xff\\xfc\\x06')
    >>> telnet.feed(b"\\xff\\xfb\\x00")  # WILL BINARY: the answer to DO, not answered again
    (b'', b'')
    """

    def __init__(self) -> None:
        self._state = _DATA
        self._verb = 0  # WILL, WONT, DO or DONT, while its option byte is awaited
        self._spoken = False  # the peer has sent IAC: it is telnet, and was asked for BINARY
        self._asked = False  # DO BINARY sent, no answer yet
        self._binary = False  # the peer sends 8-bit data
        self._recent = b""  # the last text bytes, for a UTF-8 character still incomplete
        self._command_bytes = 0  # since the last newline of text

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """The text in ``data`` (without telnet's commands) and the bytes to answer with."""
        if self._state == _DATA and _IAC not in data:  # all that nc and groupchat ever send
            if self._command_bytes and b"\n" in data:
                self._command_bytes = 0
            text, reply = data, b""
        else:
            text, reply = self._parse(data)
        self._recent = text[-3:] if len(text) >= 3 else (self._recent + text)[-3:]
        return text, reply

    def _parse(self, data: bytes) -> tuple[bytes, bytes]:
        text, reply = bytearray(), bytearray()
        start = 0
        while start < len(data):
            if self._state != _DATA:
                self._step(data[start], text, reply)
                start += 1
                self._command_bytes += 1
                continue
            end = data.find(_IAC, start)
            chunk = data[start:] if end < 0 else data[start:end]
            text += chunk
            if b"\n" in chunk:
                self._command_bytes = 0
            if end < 0:
                break
            start = end + 1
            self._command_bytes += 1
            self._state = _COMMAND
            if not self._spoken:
                self._spoken = self._asked = True
                reply += bytes([IAC, DO, BINARY])
        if self._command_bytes > MAX_COMMAND_BYTES:
            raise NoNewlineError(f"sent more than {MAX_COMMAND_BYTES} bytes of telnet commands without a line")
        return bytes(text), bytes(reply)

    def _step(self, byte: int, text: bytearray, reply: bytearray) -> None:
        """One byte of a command or subnegotiation."""
        state = self._state
        if state == _COMMAND:
            self._state = _DATA
            if byte == IAC:  # IAC IAC: the data byte 255
                text.append(IAC)
            elif byte in (WILL, WONT, DO, DONT):
                self._verb, self._state = byte, _OPTION
            elif byte == SB:
                self._state = _SUB
            elif byte in KEY_COMMANDS and not self._binary and _incomplete_utf8(self._recent + text):
                text.append(KEY_COMMANDS[byte])
            # any other command (NOP, GA, AYT, a real Ctrl-C ...) means nothing to a chat
        elif state == _OPTION:
            self._state = _DATA
            reply += self._negotiate(self._verb, byte)
        elif state == _SUB:
            if byte == IAC:
                self._state = _SUB_IAC
        elif state == _SUB_IAC:  # IAC SE ends it; IAC IAC is a 255 inside it
            self._state = _DATA if byte == SE else _SUB

    def _negotiate(self, verb: int, option: int) -> bytes:
        """The answer to one request: of all options, only the peer sending BINARY is agreed to.

        What is off already is not answered when the peer says it is off (WONT, DONT).
        """
        if verb in (DO, DONT):  # the server enables nothing
            return bytes([IAC, WONT, option]) if verb == DO else b""
        if option != BINARY:
            return bytes([IAC, DONT, option]) if verb == WILL else b""
        asked, self._asked = self._asked, False
        if (verb == WILL) == self._binary:  # no change: nothing to answer
            return b""
        self._binary = verb == WILL
        if asked and self._binary:  # the answer to our DO
            return b""
        return bytes([IAC, DO if self._binary else DONT, BINARY])


def _incomplete_utf8(tail: bytes) -> bool:
    """Whether ``tail`` ends inside a UTF-8 character, which still needs continuation bytes.

    >>> _incomplete_utf8(b"a\\xe2"), _incomplete_utf8(b"\\xe2\\x9c"), _incomplete_utf8(b"\\xe2\\x9c\\x93")
    (True, True, False)
    """
    continuations = 0
    for byte in reversed(tail[-3:]):
        if 0x80 <= byte < 0xC0:
            continuations += 1
            continue
        size = 2 if 0xC2 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4 if 0xF0 <= byte < 0xF5 else 0
        return continuations < size - 1
    return False
