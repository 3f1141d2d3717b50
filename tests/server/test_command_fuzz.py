"""Every command's arguments fuzzed with hypothesis, in the chat (an operator typing) and at the
console: whatever follows the name, the answer is whole lines, never the bug path ("... failed;
the server's log says why"), and no one is disconnected but by their own /quit, kick or ban."""

from __future__ import annotations

import io
import json
import re
from typing import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from groupchat.protocol import CHAT_COMMANDS, decode_line
from groupchat.server.console import CONSOLE_COMMANDS, Console
from groupchat.server.history import HistoryStore

from conftest import make_chat, named, newcomer

BUG = "failed; the server's log says why"
# A line the chat sends starts with its stamp ("[14:03] ", or a date too when played back)
# or is a bare notice (or, once "/mode json" switched the connection, is a JSON event); a
# reply broken over two lines would have a second line that does not.
WHOLE_LINE = re.compile(r'(\[[\d :-]+\] |\*\*\* |\{"v":1,)\S')  # or an event, after "/mode json"
# Words the commands give meaning to, so the fuzz reaches past the first check.
WORDS = st.sampled_from([
    "--address", "alice", "bob", "BOB", "nobody", "10.0.0.2", "10.0.0.0/8", "0.0.0.0/0", "::1", "[::1]",
    "::ffff:10.0.0.2", "0", "1", "1.5", "5", "-1", "\u00b2", "\u0661\u0662", "9" * 40, "1e9", "nan", "inf",
    "#dev", "lobby", "root", "/", "//", "<x>", "help", "ban",
])
ARGUMENTS = st.one_of(st.lists(WORDS, min_size=1, max_size=4).map(" ".join), st.text(max_size=60),
                      st.lists(WORDS | st.text(max_size=8), max_size=4).map(" ".join))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def store() -> Iterator[HistoryStore]:
    history = HistoryStore.in_memory()
    yield history
    history.close()


def typed(name: str, arguments: str) -> str:
    """The line a command arrives as: through the same decoding as the wire's."""
    return decode_line(f"/{name} {arguments}".encode())


@pytest.mark.parametrize("with_history", [False, True], ids=["no-history", "history"])
@pytest.mark.parametrize("spec", CHAT_COMMANDS, ids=lambda spec: spec.name)
@FUZZ
@given(arguments=ARGUMENTS)
@example(arguments="\u00b2")  # a digit to str.isdigit(), not to int(): /history's bug, always tried
def test_every_chat_command_answers_any_arguments_in_whole_lines(store, with_history, spec, arguments):
    chat = make_chat(op_password="root")
    chat.history = store if with_history else None
    alice = named(chat, "alice")
    chat.receive(alice, ["/op root"])
    bob = newcomer(chat, address="10.0.0.2:7")
    chat.receive(bob, ["bob"])
    alice.link.lines.clear()
    chat.receive(alice, [typed(spec.name, arguments)])
    for line in alice.link.lines:
        assert WHOLE_LINE.match(line) and BUG not in line, line
    if alice.link.ended:  # only by her own doing
        by_herself = spec.name in ("kick", "ban") and alice.leave_reason.startswith("kicked by alice")
        assert spec.name == "quit" or by_herself, alice.leave_reason


class Printed(io.StringIO):
    """The console's output, failing on a reply that is more than one line."""

    def write(self, text: str) -> int:
        assert text == "\n" or "\n" not in text, text
        return super().write(text)


@pytest.mark.parametrize("spec", CONSOLE_COMMANDS, ids=lambda spec: spec.name)
@FUZZ
@given(arguments=ARGUMENTS)
@example(arguments="\u00b2")
def test_every_console_command_answers_any_arguments_in_whole_lines(spec, arguments):
    chat = make_chat()
    alice = named(chat, "alice")
    stops: list[bool] = []
    printed = Printed()
    Console(chat, lambda: stops.append(True), printed).run(io.StringIO(typed(spec.name, arguments)))
    assert BUG not in printed.getvalue()
    assert len(stops) == 1 + (spec.name == "quit")  # the end of input stops it too
    assert not alice.link.ended or spec.name in ("kick", "ban")


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=8)
OPERATIONS = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(["send", "cmd", "SEND", "", "x"]) | JSON_VALUES},
                          optional={"text": st.text(max_size=20) | JSON_VALUES, "line": ARGUMENTS | JSON_VALUES,
                                    "label": st.text(max_size=70) | JSON_VALUES}),
    st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4))


@pytest.mark.parametrize("spec", CHAT_COMMANDS, ids=lambda spec: spec.name)
@FUZZ
@given(arguments=ARGUMENTS, label=st.none() | st.text(max_size=64))
def test_every_chat_command_in_json_mode_answers_in_events_ending_with_its_label(spec, arguments, label):
    chat = make_chat(op_password="root")
    alice = named(chat, "alice")
    chat.receive(alice, ["/op root", "/mode json"])
    named(chat, "bob")
    alice.link.lines.clear()
    line = json.dumps({"op": "cmd", "line": f"/{spec.name} {arguments}", "label": label})
    chat.receive(alice, [decode_line(line.encode())])
    events = [json.loads(line) for line in alice.link.lines if line.startswith("{")]
    assert all(event["v"] == 1 and event.get("code") != "INTERNAL" for event in events), events
    if label is not None and label.isprintable() and not alice.link.ended and alice.json:
        assert any(event.get("label") == label for event in events), events


@FUZZ
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=4))
def test_any_json_object_gets_at_most_one_answer_and_never_the_bug_path(operations):
    chat = make_chat()
    alice = named(chat, "alice")
    chat.receive(alice, ["/mode json"])
    alice.link.lines.clear()
    chat.receive(alice, [decode_line(json.dumps(op).encode()) for op in operations])
    events = [json.loads(line) for line in alice.link.lines]
    assert all(event.get("code") != "INTERNAL" for event in events), events
    assert len([e for e in events if e["type"] in ("error", "ack")]) <= len(operations) + 1
