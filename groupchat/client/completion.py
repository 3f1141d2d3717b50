"""Tab completion for the join client's prompt: the chat's commands, and the names it has seen.

:class:`KnownNames` is fed every line the server sends and keeps who is around; it does no
I/O, so it is tested by feeding it lines.  :class:`ChatCompleter` is the prompt_toolkit
completer that offers a command for a ``/word`` at the start of the line and a name for
any other word (so ``/msg bo`` and ``/kick bo`` complete too).
"""

from __future__ import annotations

import threading
from typing import Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from groupchat.protocol import (
    CHAT_COMMANDS,
    LINE_NOTICE,
    name_key,
    parse_comings,
    parse_entered,
    parse_line,
    parse_moved,
    parse_rename,
    parse_welcome,
    parse_who,
)

CHAT_COMMAND_NAMES = tuple(spec.name for spec in CHAT_COMMANDS)


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
        elif welcome := parse_welcome(line):
            self._add_all(welcome[1])

    def starting(self, prefix: str) -> list[str]:
        """The known names that start with ``prefix`` ignoring case, sorted that way."""
        key = name_key(prefix)
        with self._lock:
            found = [name for k, name in self._names.items() if k.startswith(key)]
        return sorted(found, key=name_key)

    def _notice(self, text: str) -> None:
        if renamed := parse_rename(text):
            self._forget(renamed[0])
            self._add(renamed[1])
        elif moved := parse_moved(text):
            self._add(moved[0])  # still online, in another room: /msg reaches them
        elif comings := parse_comings(text):
            self._add_all(comings[0])
            for name in comings[1]:
                self._forget(name)
        elif entered := parse_entered(text):
            self._add_all(entered[1])
        elif who := parse_who(text):
            self._add_all(who[1])

    def _add_all(self, names: list[str]) -> None:
        for name in names:
            self._add(name)

    def _add(self, name: str) -> None:
        with self._lock:
            self._names[name_key(name)] = name

    def _forget(self, name: str) -> None:
        with self._lock:
            self._names.pop(name_key(name), None)


class ChatCompleter(Completer):
    """Completes ``/wh`` at the start of a line to ``/who``, and any other word to a known name."""

    def __init__(self, names: KnownNames, commands: Iterable[str] = CHAT_COMMAND_NAMES) -> None:
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
