"""Tab completion for the join client's prompt: the chat's commands, and the names and rooms it has seen.

:class:`KnownNames` is fed every event the server sends and keeps who is around, from the
events' fields (a welcome's names, who joined, left or was renamed, who spoke);
:class:`KnownRooms` keeps the rooms the events name.  Neither does I/O, so they are tested by
feeding them events.  :class:`ChatCompleter` is the prompt_toolkit completer that offers a
command for a ``/word`` at the start of the line, a command after ``/help``, a room after
``/join``, and a name for any other word (so ``/msg bo`` and ``/kick bo`` complete too).
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Iterator, Mapping, Optional

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from groupchat.client.session import MODE_COMMAND
from groupchat.protocol import CHAT_COMMANDS, name_key

# The client keeps /mode to itself (see session.kept_back), so it is not offered.
# Each command and the IRC names it also answers to (/names, /list, /part...).
CHAT_COMMAND_NAMES = tuple(name for spec in CHAT_COMMANDS if spec.name != MODE_COMMAND
                           for name in (spec.name, *spec.aliases))
# Events that list who is in your room, and events whose sender is a person.
_LISTING_EVENTS = ("welcome", "enter", "who", "join")
_SPEAKING_EVENTS = ("msg", "me", "dm", "history")


class _Known:
    """Words learnt from events, unique ignoring case (as names and rooms are), thread-safe:
    the client's reader thread feeds them while the prompt's thread completes."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}  # name_key -> the word as last seen
        self._lock = threading.Lock()

    def starting(self, prefix: str) -> list[str]:
        """The known words that start with ``prefix`` ignoring case, sorted that way."""
        key = name_key(prefix)
        with self._lock:
            found = [word for k, word in self._known.items() if k.startswith(key)]
        return sorted(found, key=name_key)

    def _add_all(self, words: Iterable[Any]) -> None:
        with self._lock:
            for word in words:
                if isinstance(word, str) and word:
                    self._known[name_key(word)] = word

    def _forget_all(self, words: Iterable[Any]) -> None:
        with self._lock:
            for word in words:
                if isinstance(word, str):
                    self._known.pop(name_key(word), None)


class KnownNames(_Known):
    """The names of the people around, as learnt from the server's events; unique ignoring case.

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


class KnownRooms(_Known):
    """The rooms the server's events have named: where you are, where others went, /rooms' list.

    >>> rooms = KnownRooms()
    >>> for event in [{"type": "welcome", "name": "al", "room": "lobby"},
    ...               {"type": "leave", "room": "lobby", "names": ["bob"], "to": "dev"},
    ...               {"type": "rooms", "rooms": [{"name": "Ops", "count": 2}]}]:
    ...     rooms.heard(event)
    >>> rooms.starting(""), rooms.starting("o")
    (['dev', 'lobby', 'Ops'], ['Ops'])
    """

    def heard(self, event: Mapping[str, Any]) -> None:
        """Learn the rooms one event names."""
        named = [event.get("room"), event.get("to")]
        if event.get("type") == "rooms":
            named += [room.get("name") for room in event.get("rooms", []) if isinstance(room, Mapping)]
        self._add_all(named)


class ChatCompleter(Completer):
    """Completes ``/wh`` at the start of a line to ``/who``, the word after ``/help`` to a
    command, after ``/join`` to a known room, and any other word to a known name."""

    def __init__(self, names: KnownNames, rooms: Optional[KnownRooms] = None,
                 commands: Iterable[str] = CHAT_COMMAND_NAMES) -> None:
        self.names = names
        self.rooms = rooms or KnownRooms()
        self.commands = tuple(commands)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        command, _, argument = document.text_before_cursor.partition(" ")
        if argument == word and command.lower() in ("/help", "/join"):  # the command's first word
            offered = (self.commands if command.lower() == "/help" else self.rooms.starting(word))
            for choice in offered:
                if name_key(choice).startswith(name_key(word)):
                    yield Completion(choice, start_position=-len(word))
            return
        if word.startswith("/"):
            if word == document.text_before_cursor and not word.startswith("//"):
                typed = word[1:].lower()
                for command in self.commands:
                    if command.startswith(typed):
                        yield Completion(f"/{command}", start_position=-len(word))
            return
        for name in self.names.starting(word):
            yield Completion(name, start_position=-len(word))
