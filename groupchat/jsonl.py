"""The JSON Lines mode of the wire, as pure functions: events out, operations in.

A connection that sends ``/mode json`` gets every line as one JSON object (an *event*, with
``"v"`` and ``"type"``), and may send objects (*operations*, with ``"op"``) besides plain
lines.  The schema is in the README ("JSON Lines mode"); fields are only ever added.  Both
sides use this module, so what the server writes is what the client parses.
"""

from __future__ import annotations

import calendar
import json
import time
from typing import Any, NamedTuple, Optional

from groupchat.errors import BadOperationError

VERSION = 1
MODE_TEXT, MODE_JSON = "text", "json"
MAX_LABEL_CHARS = 64

# Error codes: stable strings a program can act on (the message is for people).
NAME_TAKEN = "NAME_TAKEN"
NAME_INVALID = "NAME_INVALID"
NAME_REFUSED = "NAME_REFUSED"
LINE_TOO_LONG = "LINE_TOO_LONG"
NOT_OP = "NOT_OP"
NO_SUCH_NAME = "NO_SUCH_NAME"
BAD_JSON = "BAD_JSON"
UNKNOWN_OP = "UNKNOWN_OP"
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
USAGE = "USAGE"
RATE_LIMITED = "RATE_LIMITED"
WRONG_PASSWORD = "WRONG_PASSWORD"
RESUME_FAILED = "RESUME_FAILED"
COMMAND_FAILED = "COMMAND_FAILED"
INTERNAL = "INTERNAL"

# Why a connection ends, in a "bye" event.
BYE_QUIT = "QUIT"
BYE_KICKED = "KICKED"
BYE_BANNED = "BANNED"
BYE_SHUTDOWN = "SHUTDOWN"
BYE_WRONG_PASSWORD = "WRONG_PASSWORD"
RESUME_FAILED = "RESUME_FAILED"
BYE_LOCKED_OUT = "LOCKED_OUT"
BYE_TIMEOUT = "TIMEOUT"
BYE_CUT_OFF = "CUT_OFF"
BYE_FULL = "FULL"
BYE_REFUSED = "REFUSED"

OP_SEND, OP_CMD = "send", "cmd"


def line_allowance(max_line: int) -> int:
    """How long a JSON connection's line may be, so that an operation carrying a text of
    ``max_line`` bytes fits whatever its escapes (the text itself is held to ``max_line``)."""
    return 2 * max_line + 256


def render_event(kind: str, /, **fields: Any) -> bytes:
    """One event as its line on the wire; fields that are None are left out.

    >>> render_event("msg", id=7, room="lobby", ts="2026-12-01T18:40:12.345Z", **{"from": "bob"}, text="hé")
    b'{"v":1,"type":"msg","id":7,"room":"lobby","ts":"2026-12-01T18:40:12.345Z","from":"bob","text":"h\\xc3\\xa9"}\\n'
    """
    event = {"v": VERSION, "type": kind}
    event.update((key, value) for key, value in fields.items() if value is not None)
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def parse_event(line: str) -> dict[str, Any]:
    """An event the server sent; ValueError if the line is not one.

    >>> parse_event('{"v":1,"type":"ack","label":"c7","id":1042}')["id"]
    1042
    """
    event = json.loads(line)
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ValueError(f"not a groupchat event: {line[:80]!r}")
    return event


def iso_time(seconds: float) -> str:
    """``ts`` of an event: UTC, ISO 8601, milliseconds.

    >>> iso_time(0.25)
    '1970-01-01T00:00:00.250Z'
    """
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1000):03d}Z"


def parse_iso_time(ts: str) -> float:
    """Seconds since the epoch from an event's ``ts`` (the inverse of :func:`iso_time`);
    ValueError if it is not one.

    >>> parse_iso_time(iso_time(1796150412.345))
    1796150412.345
    """
    whole, _, millis = ts.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


class Operation(NamedTuple):
    """What a JSON client asked for in one object: a message (``send``) or a command line (``cmd``)."""

    op: str
    text: str  # the message, or the command line
    label: Optional[str]


def is_operation(line: str) -> bool:
    """Whether a line from a JSON client is an object (an operation) rather than a plain line."""
    return line.startswith("{")


def parse_operation(line: str) -> Operation:
    """An operation from one line, or :class:`BadOperationError` (with the error code and any
    label) saying what is wrong with it.

    >>> parse_operation('{"op": "send", "text": "hi", "label": "c7"}')
    Operation(op='send', text='hi', label='c7')
    >>> parse_operation('{"op": "cmd", "line": "/who"}')
    Operation(op='cmd', text='/who', label=None)
    >>> parse_operation('{"op": "dance", "label": "d1"}').label  # the error knows whose it was
    Traceback (most recent call last):
    ...
    groupchat.errors.BadOperationError: unknown op "dance"; use "send" or "cmd"
    >>> parse_operation('{"op": "send"')
    Traceback (most recent call last):
    ...
    groupchat.errors.BadOperationError: not a JSON object: Expecting ',' delimiter at column 14
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadOperationError(f"not a JSON object: {exc.msg} at column {exc.colno}", code=BAD_JSON) from None
    except (ValueError, RecursionError):  # arrays nested thousands deep
        raise BadOperationError("not a JSON object", code=BAD_JSON) from None
    if not isinstance(obj, dict):
        raise BadOperationError("not a JSON object", code=BAD_JSON)
    label = obj.get("label")
    if label is not None and not (isinstance(label, str) and len(label) <= MAX_LABEL_CHARS
                                  and label.isprintable() and _whole(label) == label):
        raise BadOperationError(f"a label is a string of at most {MAX_LABEL_CHARS} printable characters",
                                code=BAD_JSON)
    op = obj.get("op")
    field = {OP_SEND: "text", OP_CMD: "line"}.get(op) if isinstance(op, str) else None
    if field is None:
        raise BadOperationError(f'unknown op {json.dumps(op)[:40]}; '
                                f'use "{OP_SEND}" or "{OP_CMD}"', code=UNKNOWN_OP, label=label)
    text = obj.get(field)
    if not isinstance(text, str) or "\n" in text or "\r" in text:
        raise BadOperationError(f'"{op}" needs "{field}": a string of one line', code=BAD_JSON, label=label)
    return Operation(op, _whole(text), label)


def _whole(text: str) -> str:
    """``text`` with any lone surrogate (``"\\ud800"`` is valid JSON, but no UTF-8) replaced.

    >>> _whole("a\\ud800b") == "a\\ufffd\\ufffd\\ufffdb"
    True
    """
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def render_operation(op: str, text: str, label: Optional[str] = None) -> bytes:
    """The line a JSON client sends for one operation (the inverse of :func:`parse_operation`).

    >>> parse_operation(render_operation(OP_CMD, "/who", "c8").decode())
    Operation(op='cmd', text='/who', label='c8')
    """
    obj = {"op": op, {OP_SEND: "text", OP_CMD: "line"}[op]: text}
    if label is not None:
        obj["label"] = label
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
