"""Tab completion for the join client's prompt: the chat's commands, and the names it has seen.

:class:`KnownNames` is fed every event the server sends and keeps who is around, from the
events' fields (a welcome's names, who joined, left or was renamed, who spoke); it does no
I/O, so it is tested by feeding it events.  :class:`ChatCompleter` is the prompt_toolkit
completer that offers a command for a ``/word`` at the start of the line and a name for
any other word (so ``/msg bo`` and ``/kick bo`` complete too).
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Iterator, Mapping

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from groupchat.client.session import MODE_COMMAND
from groupchat.protocol import CHAT_COMMANDS, name_key

# The client keeps /mode to itself (see session.kept_back), so it is not offered.
CHAT_COMMAND_NAMES = tuple(spec.name for spec in CHAT_COMMANDS if spec.name != MODE_COMMAND)
# Events that list who is in your room, and events whose sender is a person.
_LISTING_EVENTS = ("welcome", "enter", "who", "join")
_SPEAKING_EVENTS = ("msg", "me", "dm", "history")


class KnownNames:
    """The names of the people around, as learnt from the server's events; unique ignoring case.

    Thread-safe: the client's reader thread feeds it while the prompt's thread completes.

    >>> names = KnownNames()
    >>> for event in [{"type": "welcome", "name": "alice", "names": ["bob", "Carol"], "count": 2},
    ...               {"type": "join", "names": ["dave", "frank"], "count": 2},
    ...               {"type": "msg", "from": "erin", "text": "hi"},
    ...               {"type": "leave", "names": ["bob"], "count": 1, "reason": "quit"},
    ...               {"type": "nick", "old": "dave", "new": "dan"}]:
    ...     names.heard(event)
    >>> names.starting("")
    ['Carol', 'dan', 'erin', 'frank']
    >>> names.starting("c")
    ['Carol']
    """

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # name_key -> the name as last seen
        self._lock = threading.Lock()

    def heard(self, event: Mapping[str, Any]) -> None:
        """Learn from one event: who is listed, speaks, arrives, leaves or is renamed."""
        kind = event.get("type")
        if kind in _LISTING_EVENTS:
            self._add_all(event.get("names", []))
        elif kind in _SPEAKING_EVENTS:
            self._add_all([event.get("from"), event.get("to")])
        elif kind == "leave":
            if event.get("to"):  # still online, in another room: /msg reaches them
                self._add_all(event.get("names", []))
            else:
                self._forget_all(event.get("names", []))
        elif kind == "nick":
            self._forget_all([event.get("old")])
            self._add_all([event.get("new")])

    def starting(self, prefix: str) -> list[str]:
        """The known names that start with ``prefix`` ignoring case, sorted that way."""
        key = name_key(prefix)
        with self._lock:
            found = [name for k, name in self._names.items() if k.startswith(key)]
        return sorted(found, key=name_key)

    def _add_all(self, names: Iterable[Any]) -> None:
        with self._lock:
            for name in names:
                if isinstance(name, str) and name:
                    self._names[name_key(name)] = name

    def _forget_all(self, names: Iterable[Any]) -> None:
        with self._lock:
            for name in names:
                if isinstance(name, str):
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
