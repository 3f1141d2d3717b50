"""Tab completion for the join client's prompt: the chat's commands, and the names it has seen.

:class:`KnownNames` is fed every line the server sends and keeps who is around; it does no
I/O, so it is tested by feeding it lines.  :class:`ChatCompleter` is the prompt_toolkit
completer that offers a command for a ``/word`` at the start of the line and a name for
any other word (so ``/msg bo`` and ``/kick bo`` complete too).
"""

from __future__ import annotations

import re
import threading
from typing import Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from groupchat.protocol import LINE_NOTICE, is_welcome, name_key, parse_line, parse_rename

# The chat's commands, as /help lists them (tests/test_completion.py checks them against the server).
CHAT_COMMANDS = ("help", "nick", "who", "me", "msg", "quit", "join", "rooms", "topic", "history",
                 "search", "op", "kick", "ban", "unban", "bans")

# The notices that say who is around, in the chat's wording; names have no spaces.
# Comings and goings, one or a room's batch: "bob left (quit: bye)", "a, b and 3 others joined; c left".
_EVENTS = re.compile(r"(?:^|; )(?P<names>\S+(?:, \S+)*(?: and [\d,]+ others?)?) (?P<event>joined|left)\b")
_MOVED = re.compile(r"(?P<name>\S+) went to \S+")
# The welcome, "/join" ("Here now: a, b and 3 others.") and "/who" ("In lobby (3): a, b. 5 online in all.").
_LIST = re.compile(r"(?:Here now|In \S+ \(\d+\)): (?P<names>.+?)\.(?: \d+ online in all\.)?$")


class KnownNames:
    """The names of the people around, as learnt from what the server sends; unique ignoring case.

    Thread-safe: the client's reader thread feeds it while the prompt's thread completes.

    >>> names = KnownNames()
    >>> for line in ["*** Welcome, alice! Here now: bob, Carol.", "[14:03] *** dave, frank joined",
    ...              "[14:04] <erin> hi", "[14:05] *** bob left (quit)",
    ...              "[14:06] *** dave is now known as dan"]:
    ...     names.heard(line)
    >>> names.starting("")
    ['Carol', 'dan', 'erin', 'frank']
    >>> names.starting("c")
    ['Carol']
    """

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # name_key -> the name as last seen
        self._lock = threading.Lock()

    def heard(self, line: str) -> None:
        """Learn from one line the server sent: who speaks, arrives, leaves or is renamed."""
        parsed = parse_line(line)
        if parsed.sender:
            self._add(parsed.sender)
        elif parsed.kind == LINE_NOTICE:
            self._notice(parsed.text)
        elif is_welcome(line):
            self._listed(line)

    def starting(self, prefix: str) -> list[str]:
        """The known names that start with ``prefix`` ignoring case, sorted that way."""
        key = name_key(prefix)
        with self._lock:
            found = [name for k, name in self._names.items() if k.startswith(key)]
        return sorted(found, key=name_key)

    def _notice(self, text: str) -> None:
        renamed = parse_rename(text)
        if renamed:
            self._forget(renamed[0])
            self._add(renamed[1])
        elif match := _MOVED.fullmatch(text):
            self._add(match["name"])  # still online, in another room: /msg reaches them
        elif events := list(_EVENTS.finditer(text)):
            for event in events:
                for name in _listed_names(event["names"]):
                    (self._add if event["event"] == "joined" else self._forget)(name)
        else:
            self._listed(text)

    def _listed(self, text: str) -> None:
        match = _LIST.search(text)
        if match:
            for name in _listed_names(match["names"]):
                self._add(name)

    def _add(self, name: str) -> None:
        with self._lock:
            self._names[name_key(name)] = name

    def _forget(self, name: str) -> None:
        with self._lock:
            self._names.pop(name_key(name), None)


def _listed_names(listing: str) -> list[str]:
    """The names in "a, b and 3 others": names have no spaces, so each item's first word is one."""
    return [item.split(" ", 1)[0] for item in listing.split(", ")]


class ChatCompleter(Completer):
    """Completes ``/wh`` at the start of a line to ``/who``, and any other word to a known name."""

    def __init__(self, names: KnownNames, commands: Iterable[str] = CHAT_COMMANDS) -> None:
        self.names = names
        self.commands = tuple(commands)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        if word.startswith("/"):
            if word == document.text_before_cursor and not word.startswith("//"):
                typed = word[1:].lower()
                for command in self.commands:
                    if command.startswith(typed):
                        yield Completion(f"/{command}", start_position=-len(word))
            return
        for name in self.names.starting(word):
            yield Completion(name, start_position=-len(word))
