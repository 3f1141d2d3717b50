"""The chat's slash commands, apart from the chat's core: each ``cmd_NAME`` uses a narrow chat API.

Their names, usage and help are :data:`groupchat.protocol.CHAT_COMMANDS`, the table clients
complete from; :class:`~groupchat.server.commands.CommandTable` binds each to its method
and turns any mistake into a one-line answer.
"""

from __future__ import annotations

import re
import time
from typing import Any, Optional, Protocol, Sequence

from groupchat.errors import CommandError, InvalidNameError, UsageError
from groupchat.jsonl import iso_time
from groupchat.protocol import (
    CHAT_COMMANDS,
    DEFAULT_HISTORY_LINES,
    EVENT_ID,
    MAX_HISTORY,
    MAX_SEARCH,
    check_room,
    STAMP_FORMAT,
    name_key,
    render_who,
)
from groupchat.server.commands import CommandTable, split_args
from groupchat.server.events import Out, RoomEvent
from groupchat.server.history import Entry
from groupchat.server.moderation import Moderation, parse_ban
from groupchat.server.registry import LOBBY, Member, Registry, RoomInfo
from groupchat.server.settings import MAX_LISTED_NAMES, MAX_REASON_CHARS, ServerSettings

# ASCII digits, and few: str.isdigit() takes "²", which int() refuses, and int() refuses 5,000 digits.
_COUNT = re.compile(r"[0-9]{1,9}")
MAX_IGNORED = 100  # names one connection may ignore


def profile(member: Member) -> dict[str, Any]:
    """What /whois says of a member (and, in a cluster, what its node keeps in Redis for the others)."""
    return {"name": member.name, "room": member.room.name if member.room else None, "since": member.connected_at,
            "away": member.away, "op": member.is_op, "address": member.address, "host": member.host}


class ChatAPI(Protocol):
    """What the commands may ask of the chat (:class:`~groupchat.server.chat.Chat` is one)."""

    registry: Registry
    settings: ServerSettings
    moderation: Moderation

    def tell(self, member: Member, text: str, last: Optional[str] = None) -> None: ...
    def reply(self, member: Member, lines: list[str], kind: str, **fields: Any) -> None: ...
    def switch_mode(self, member: Member, mode: str) -> None: ...
    def publish(self, sender: Member, event: RoomEvent) -> Optional[int]: ...
    def enter(self, member: Member, room_name: str, welcome: bool = False) -> None: ...
    def rename(self, member: Member, new: str) -> None: ...
    def set_topic(self, member: Member, topic: str) -> None: ...
    def private(self, sender: Member, name: str, text: str) -> None: ...
    def quit(self, member: Member, reason: str) -> None: ...
    def recent(self, room: str, count: int, before: Optional[int] = None) -> list[Entry]: ...
    def search(self, room: str, text: str) -> list[Entry]: ...
    def played(self, room: str, entries: Sequence[Entry], replay: bool = False,
               query: Optional[str] = None, none: str = "", missed: Optional[int] = None,
               title: str = "") -> Out: ...
    def missed_since(self, room: str, after: int, before: Optional[int] = None) -> tuple[list[Entry], int]: ...
    def describe_rooms(self) -> list[str]: ...
    def rooms(self) -> list[RoomInfo]: ...
    def who(self, member: Member) -> tuple[list[str], dict[str, str], int]: ...
    def whois(self, name: str) -> dict[str, Any]: ...
    def changed(self, member: Member) -> None: ...


class ChatCommands:
    """The commands a named member may type; :attr:`table` runs them."""

    def __init__(self, chat: ChatAPI) -> None:
        self.chat = chat
        self.table = CommandTable(self, CHAT_COMMANDS)

    def _tell_all(self, member: Member, lines: list[str]) -> None:
        for line in lines:
            self.chat.tell(member, line)

    def cmd_help(self, member: Member, rest: str) -> None:
        show_ops = self.chat.settings.op_password is not None
        self._tell_all(member, self.table.help_lines(rest, show_ops=show_ops))

    def cmd_nick(self, member: Member, rest: str) -> None:
        (new,) = split_args(rest, 1)
        try:
            self.chat.moderation.check_name(new)
        except InvalidNameError as exc:
            raise CommandError(f"Sorry, {exc}") from None
        if new.strip() == member.name:
            self.chat.tell(member, f"You are {member.name} already.")
            return
        self.chat.rename(member, new)

    def cmd_who(self, member: Member, rest: str) -> None:
        """Text names the first few (those away marked so); JSON, for programs, names everyone."""
        here, away, online = self.chat.who(member)
        room = member.room.name
        shown = [f"{name} (away)" if name in away else name for name in here]
        self.chat.reply(member, [render_who(room, shown, online, MAX_LISTED_NAMES)], "who",
                        room=room, names=here, count=len(here), online=online, away=away or None)

    def cmd_whois(self, member: Member, rest: str) -> None:
        (name,) = split_args(rest, 1)
        found = self.chat.whois(name)
        since = time.strftime(STAMP_FORMAT, time.localtime(found["since"]))
        said = f"{found['name']} is in {found['room']}, here since {since}"
        said += f", away: {found['away']}" if found["away"] else ""
        said += ", an operator" if found["op"] else ""
        address = found["address"] if member.is_op else None  # for operators, who may ban it
        said += f", from {address}" if address else ""
        self.chat.reply(member, [said + "."], "whois", name=found["name"], room=found["room"],
                        since=iso_time(found["since"]), away=found["away"] or None, op=found["op"],
                        address=address)

    def cmd_r(self, member: Member, rest: str) -> None:
        if not rest:
            raise UsageError()
        if not member.last_private_from:
            raise CommandError("no private message to answer yet")
        self.chat.private(member, member.last_private_from, rest)

    def cmd_away(self, member: Member, rest: str) -> None:
        member.away = rest[:MAX_REASON_CHARS]
        self.chat.changed(member)
        self.chat.tell(member, f"You are away: {member.away}" if rest else "You are back.")

    def cmd_ignore(self, member: Member, rest: str) -> None:
        if not rest:
            ignored = sorted(member.ignoring)
            self.chat.tell(member, f"You ignore {', '.join(ignored)}." if ignored else "You ignore no one.")
            return
        (name,) = split_args(rest, 1)
        key = name_key(name)
        if key == name_key(member.name):
            raise CommandError("you cannot ignore yourself")
        if len(member.ignoring) >= MAX_IGNORED:
            raise CommandError(f"you ignore {MAX_IGNORED} names already; /unignore some first")
        member.ignoring.add(key)
        self.chat.tell(member, f"You will see nothing more from {name}, in rooms or in private "
                               f"(/unignore {name} undoes it).")

    def cmd_unignore(self, member: Member, rest: str) -> None:
        (name,) = split_args(rest, 1)
        if name_key(name) not in member.ignoring:
            raise CommandError(f"you do not ignore {name}")
        member.ignoring.discard(name_key(name))
        self.chat.tell(member, f"You see {name}'s lines again.")

    def cmd_me(self, member: Member, rest: str) -> None:
        if not rest:
            raise UsageError()
        self.chat.publish(member, RoomEvent.action(member.name, rest))

    def cmd_msg(self, member: Member, rest: str) -> None:
        name, text = split_args(rest, 2)
        self.chat.private(member, name, text)

    def cmd_quit(self, member: Member, rest: str) -> None:
        self.chat.quit(member, rest)

    def cmd_join(self, member: Member, rest: str) -> None:
        (room,) = split_args(rest, 1)
        room = check_room(room)
        if name_key(room) == name_key(member.room.name):
            raise CommandError(f"you are already in {member.room.name}")
        self.chat.enter(member, room)

    def cmd_part(self, member: Member, rest: str) -> None:
        if name_key(member.room.name) == name_key(LOBBY):
            raise CommandError("you are in the lobby already; /quit leaves the chat")
        self.chat.enter(member, LOBBY)

    def cmd_rooms(self, member: Member, rest: str) -> None:
        self.chat.reply(member, self.chat.describe_rooms(), "rooms",
                        rooms=[info._asdict() for info in self.chat.rooms()])

    def cmd_resume(self, member: Member, rest: str) -> None:
        raise CommandError("you are connected already: /resume is the first line of a new connection")

    def cmd_mode(self, member: Member, rest: str) -> None:
        self.chat.switch_mode(member, rest.lower())

    def cmd_topic(self, member: Member, rest: str) -> None:
        room = member.room
        if rest:
            self.chat.set_topic(member, rest)
        else:
            member.say(self.chat.topic(room.name, room.topic))

    def cmd_history(self, member: Member, rest: str) -> None:
        room = member.room.name
        word, _, after = rest.partition(" ")
        if word == "after":
            if not EVENT_ID.fullmatch(after.strip()):
                raise UsageError()
            entries, missed = self.chat.missed_since(room, int(after))
            member.say(self.chat.played(room, entries, missed=missed))
            return
        asked = DEFAULT_HISTORY_LINES
        if rest:
            if not _COUNT.fullmatch(rest) or int(rest) < 1:
                raise UsageError()
            asked = int(rest)
        entries = self.chat.recent(room, min(asked, MAX_HISTORY))
        capped = f" (at most {MAX_HISTORY} at a time)" if asked > MAX_HISTORY else ""
        member.say(self.chat.played(room, entries, none=f"No history in {room} yet.",
                                    title=f"The last {len(entries)} messages in {room}{capped}:"))

    def cmd_search(self, member: Member, rest: str) -> None:
        if not rest:
            raise UsageError()
        room = member.room.name
        entries = self.chat.search(room, rest)
        capped = f" (the newest {MAX_SEARCH})" if len(entries) == MAX_SEARCH else ""
        member.say(self.chat.played(room, entries, query=rest, title=f'{len(entries)} messages in {room} '
                                                                  f'containing "{rest}"{capped}, newest first:',
                                    none=f'No messages in {room} contain "{rest}".'))

    def cmd_op(self, member: Member, rest: str) -> None:
        self.chat.moderation.make_op(member, rest)

    def cmd_kick(self, member: Member, rest: str) -> None:
        name, *reason = split_args(rest, 1, at_most=2)
        self.chat.moderation.kick_name(name, member.name, "".join(reason))

    def cmd_ban(self, member: Member, rest: str) -> None:
        self.chat.tell(member, self.chat.moderation.ban(parse_ban(rest), member.name))

    def cmd_unban(self, member: Member, rest: str) -> None:
        self.chat.tell(member, self.chat.moderation.unban(parse_ban(rest, with_minutes=False)))

    def cmd_bans(self, member: Member, rest: str) -> None:
        self._tell_all(member, self.chat.moderation.describe_bans())
