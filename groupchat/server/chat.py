"""What the server says to whom: the handshake, rooms, messages and the chat's slash commands.

No sockets here: each :class:`~groupchat.server.registry.Member` carries a ``send(bytes)`` that
must not block (the server gives it an :class:`~groupchat.server.outbox.Outbox`), so this logic
is tested by calling it with members that record what they are sent.
"""

from __future__ import annotations

import functools
import hmac
import logging
import math
import time
from typing import Callable, Iterable, Optional, Sequence, Union

from groupchat.server.access import BanList
from groupchat.server.commands import CommandTable, command, split_args, usage_error
from groupchat.errors import (
    CommandError,
    HistoryError,
    InvalidAddressError,
    InvalidNameError,
    NameTakenError,
)
from groupchat.server.fanout import Delivery
from groupchat.server.history import MAX_HISTORY, MAX_SEARCH, Batch, HistoryStore
from groupchat.server.notices import JOINED, LEFT, NoticeBatcher
from groupchat.protocol import (
    ENCODING,
    LINE_ACTION,
    LINE_MESSAGE,
    LINE_NOTICE,
    LIVE_MARKER,
    NAME_PROMPT,
    PASSWORD_PROMPT,
    STAMP_FORMAT,
    LineTooLong,
    check_name,
    check_room,
    encode_line,
    list_names,
    message_text,
    name_key,
    render_action,
    render_history,
    render_message,
    render_notice,
    render_private,
    render_refusal,
    render_rename,
    render_welcome,
    split_command,
)
from groupchat.server.registry import LOBBY, Member, Registry, Room

log = logging.getLogger(__name__)

_PROMPT = encode_line(NAME_PROMPT)
_PASSWORD_PROMPT = encode_line(PASSWORD_PROMPT)
MAX_LISTED_NAMES = 20  # /who and the welcome line name this many, then say how many more
DEFAULT_HISTORY_LINES = 20  # /history with no number
# Messages relayed as one batch at most: bounds how far a flood can run ahead of the
# history writer between two checks (see HistoryStore.wait_for_room).
MAX_BATCH_LINES = 256
HISTORY_STAMP_FORMAT = "%Y-%m-%d %H:%M"  # a played-back line not from today
# Leaves told together with the room's other comings and goings; others are told at once.
PLAIN_DISCONNECTS = ("connection closed", "connection lost")


class Clock:
    """The ``HH:MM`` stamp put on lines, computed once a minute rather than once a line."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._minute = -1
        self._stamp = ""

    def stamp(self) -> str:
        minute = int(self._now() // 60)
        if minute != self._minute:  # a race here only recomputes the same string
            self._stamp = time.strftime(STAMP_FORMAT, time.localtime(minute * 60))
            self._minute = minute
        return self._stamp


class Chat:
    """Rooms of named members; everyone starts in the lobby.

    ``password``, when set, must be the first line, before the name; a wrong one is
    answered after ``wrong_password_delay`` seconds and the connection closed.
    ``op_password`` enables ``/op``; operators may kick, ban and set topics (without it,
    anyone may set a topic and no one may kick or ban from the chat).
    ``history`` keeps room messages; joining a room replays its last ``replay`` of them.
    Joins and plain leaves are told at most once per ``notice_interval`` per room
    (:meth:`tell_due_notices` tells what waited); 0 tells each at once.
    """

    def __init__(self, registry: Registry, clock: Optional[Clock] = None,
                 bans: Optional[BanList] = None, op_password: Optional[str] = None,
                 password: Optional[str] = None, wrong_password_delay: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep,
                 history: Optional[HistoryStore] = None, replay: int = 0,
                 notice_interval: float = 0.0) -> None:
        self.registry = registry
        self.clock = clock or Clock()
        self.bans = bans or BanList()
        self.op_password = op_password
        self.password = password
        self.wrong_password_delay = wrong_password_delay
        self.sleep = sleep
        self.history = history
        self.replay = replay
        self.notices: NoticeBatcher[Room] = NoticeBatcher(notice_interval)
        self.commands = CommandTable(self)

    # -- the life of a connection --------------------------------------------------------

    def greet(self, member: Member) -> None:
        """Ask a new connection for the password if there is one, else for its name."""
        member.send(_PASSWORD_PROMPT if self.password is not None else _PROMPT)

    def refuse(self, member: Member, reason: str) -> None:
        """Tell a connection why it is being closed, and close it once that has gone out."""
        member.send(encode_line(render_refusal(f"{reason}; goodbye")))
        member.outbox.end()

    def receive(self, member: Member, lines: Sequence[Union[str, LineTooLong]]) -> None:
        """Handle the lines one read brought from a connection, in order.

        Consecutive messages go out as one batch: rendered once, encoded once, one send per
        member of the room, which is what lets a busy room keep up.
        """
        said: list[str] = []
        for line in lines:
            if member.name is not None and isinstance(line, str) and split_command(line) is None:
                if line:
                    said.append(message_text(line))
                continue
            self._say(member, said)  # what came before this line goes first
            said = []
            self._receive_one(member, line)
        self._say(member, said)

    def _receive_one(self, member: Member, line: Union[str, LineTooLong]) -> None:
        """A line that is not a message: the password, the name, a command, or one too long."""
        if isinstance(line, LineTooLong):
            self.tell(member, f"Line not sent: longer than {line.limit} bytes.")
        elif member.name is None:
            if self.password is None or member.authenticated:
                self._offer_name(member, line)
            else:
                self._check_password(member, line)
        else:
            self.commands.run(member, line, self.tell, lambda m: m.is_op)

    def _say(self, member: Member, texts: list[str]) -> None:
        stamp = self.clock.stamp()
        for start in range(0, len(texts), MAX_BATCH_LINES):
            run = texts[start:start + MAX_BATCH_LINES]
            self._to_room(member, [render_message(stamp, member.name, text) for text in run],
                          record=(LINE_MESSAGE, run))

    def leave(self, member: Member, reason: str = "") -> None:
        """Forget a connection; if it was in a room, tell the others there it left (and why).

        A plain disconnect is told with the room's other comings and goings (see
        :mod:`groupchat.server.notices`); one with a reason worth reading (a quit message, a kick,
        a cut-off) is told at once.
        """
        room = self.registry.disconnect(member)
        if room is None:
            return
        reason = member.leave_reason or reason
        log.info("%s left from %s%s", member.name, member.address, f" ({reason})" if reason else "")
        if reason.startswith(PLAIN_DISCONNECTS):
            self._tell_room(room, self.notices.add(room, LEFT, member.name, len(room)))
        else:
            self._send_all(self.registry.members_in(room), self._notice(f"{member.name} left ({reason})"))

    def tell_due_notices(self) -> None:
        """Tell each room the comings and goings that waited for its next notice line."""
        for room, text in self.notices.take_due():
            self._tell_room(room, text)

    def _tell_room(self, room: Room, text: Optional[str], besides: Optional[Member] = None) -> None:
        if text is not None:
            self._send_all((m for m in self.registry.members_in(room) if m is not besides),
                           self._notice(text))

    def announce(self, text: str) -> None:
        """A server notice to every member in every room."""
        self._send_all(self.registry.named(), self._notice(text))

    def missed_notice(self, count: int) -> bytes:
        """What a reader too slow for its queue is told in place of the messages it lost."""
        return encode_line(self._notice(f"You missed {count} messages while you were not reading; "
                                        f"/history {count} shows them."))

    def tell(self, member: Member, text: str) -> None:
        """A notice to one member only."""
        member.send(encode_line(self._notice(text)))

    def _check_password(self, member: Member, given: str) -> None:
        if hmac.compare_digest(given.encode(), self.password.encode()):
            member.authenticated = True
            member.send(_PROMPT)
            return
        log.warning("wrong password from %s", member.address)
        self.sleep(self.wrong_password_delay)  # only this connection's thread waits
        member.leave_reason = "wrong password"
        self.refuse(member, "wrong password")

    def _offer_name(self, member: Member, raw: str) -> None:
        try:
            self.registry.claim(member, check_name(raw))
        except (InvalidNameError, NameTakenError) as exc:
            member.send(encode_line(render_refusal(str(exc))) + _PROMPT)
            return
        log.info("%s joined from %s", member.name, member.address)
        self._enter(member, LOBBY, welcome=True)

    def _enter(self, member: Member, room_name: str, welcome: bool = False) -> None:
        """Move a member into a room: its greeting and the room's recent history first, then live chat.

        The member's outbox holds live lines while the greeting is made, and history stops
        exactly where live delivery starts, so nothing is shown twice or missed.
        """
        member.outbox.hold()
        room_before, room, live_from = self.registry.enter(
            member, room_name, (lambda: self.history.next_id) if self.history else (lambda: 0))
        names, count = self.registry.glimpse(room, member, MAX_LISTED_NAMES)
        # The rooms hear of it before the member hears its welcome, so anything that follows
        # the welcome (its first line, the next person to come) comes after the notice too.
        if room_before is not None:
            self._tell_room(room_before, f"{member.name} went to {room.name}")
        self._tell_room(room, self.notices.add(room, JOINED, member.name, count), besides=member)
        others = list_names(names, MAX_LISTED_NAMES, total=count)
        greeting = [render_welcome(member.name, others) if welcome else self._notice(
            f"You are now in {room.name}. " + (f"Here now: {others}." if others else "Nobody else is here yet."))]
        if room.topic:
            greeting.append(self._notice(f"Topic of {room.name}: {room.topic}"))
        played = self._replay(room.name, self.replay, before=live_from)
        if played:
            greeting += played + [self._notice(LIVE_MARKER)]
        member.outbox.release(b"".join(map(encode_line, greeting)))

    def _replay(self, room: str, count: int, before: Optional[int] = None) -> list[str]:
        """A room's last ``count`` stored lines, as history lines; none if history cannot be read."""
        if not count or self.history is None:
            return []
        try:
            entries = self.history.recent(room, count, before=before)
        except HistoryError as exc:
            log.error("replay for %s: %s", room, exc)
            return []
        today = time.localtime().tm_yday
        return [render_history(self._stamp_of(entry.time, today), entry.kind, entry.sender, entry.text)
                for entry in entries]

    @staticmethod
    def _stamp_of(when: float, today: int) -> str:
        """The time of a stored line, with its date when it is not from today."""
        moment = time.localtime(when)
        return time.strftime(STAMP_FORMAT if moment.tm_yday == today else HISTORY_STAMP_FORMAT, moment)

    # -- operations the console shares ---------------------------------------------------

    def kick(self, target: Member, by: str, reason: str = "") -> None:
        """Disconnect a member; its room hears why."""
        why = f"kicked by {by}" + (f": {reason}" if reason else "")
        log.warning("%s (%s) %s", target.name, target.address, why)
        target.leave_reason = why
        self.tell(target, f"You were {why}.")
        target.outbox.end()

    def ban(self, target: str, minutes: str, by: str) -> str:
        """Ban a member's address (and kick them) or an address or block; return what was done."""
        try:
            length = float(minutes) if minutes else 0.0
        except ValueError:
            length = -1.0
        if not (0 <= length < math.inf):
            raise CommandError(f'"{minutes}" is not a number of minutes')
        member = self.registry.find(target)
        try:
            ban = self.bans.add(member.host if member else target, length)
        except InvalidAddressError:
            raise CommandError(f'"{target}" is neither a connected name nor an address') from None
        for victim in self.registry.connections():
            if victim.name is not None and self.bans.is_banned(victim.host):
                self.kick(victim, by, "banned")
        span = f"for {length:g} minutes" if length else "until lifted"
        log.warning("%s banned %s %s", by, ban.network, span)
        return f"Banned {ban.network} {span}."

    def unban(self, target: str) -> str:
        if not self.bans.remove(target):
            raise CommandError(f"{target} is not banned")
        return f"Lifted the ban on {target}."

    def describe_bans(self) -> list[str]:
        now = time.time()
        return [f"{ban.network} " + ("until lifted" if ban.until == math.inf
                                     else f"for {math.ceil((ban.until - now) / 60)} more minutes")
                for ban in self.bans.active()] or ["No bans."]

    def describe_rooms(self) -> list[str]:
        return [f"{info.name} ({info.count})" + (f": {info.topic}" if info.topic else "")
                for info in self.registry.rooms()] or ["No rooms: nobody is here."]

    def find(self, name: str) -> Member:
        """The member called ``name``, or a :class:`CommandError` saying there is none."""
        member = self.registry.find(name)
        if member is None or member.room is None:
            raise CommandError(f'no one called "{name}" is here')
        return member

    # -- the chat's commands -------------------------------------------------------------

    @command("[COMMAND]", "list the commands, or explain one")
    def cmd_help(self, member: Member, rest: str) -> None:
        for line in self.commands.help_lines(rest, show_ops=self.op_password is not None):
            self.tell(member, line)

    @command("NEW", "change your name")
    def cmd_nick(self, member: Member, rest: str) -> None:
        (new,) = split_args(rest, 1, self.cmd_nick)
        try:
            old = self.registry.claim(member, check_name(new))
        except (InvalidNameError, NameTakenError) as exc:
            raise CommandError(f"Sorry, {exc}") from None
        log.info("%s is now known as %s", old, member.name)
        self._to_room(member, [self._notice(render_rename(old, member.name))], include_self=True)

    @command("", "who is in your room, and how many are online")
    def cmd_who(self, member: Member, rest: str) -> None:
        here = [m.name for m in self.registry.roommates(member)]
        online = len(self.registry.named())
        self.tell(member, f"In {member.room.name} ({len(here)}): {list_names(here, MAX_LISTED_NAMES)}. "
                          f"{online} online in all.")

    @command("ACTION", "say what you do, shown as * NAME ACTION")
    def cmd_me(self, member: Member, rest: str) -> None:
        if not rest:
            raise usage_error(self.cmd_me)
        self._to_room(member, [render_action(self.clock.stamp(), member.name, rest)],
                      record=(LINE_ACTION, [rest]))

    @command("NAME TEXT", "a private message only NAME sees")
    def cmd_msg(self, member: Member, rest: str) -> None:
        name, text = split_args(rest, 2, self.cmd_msg)
        target = self.find(name)
        stamp = self.clock.stamp()
        target.send(encode_line(render_private(stamp, member.name, text)))
        member.send(encode_line(render_private(stamp, member.name, text, to=target.name)))

    @command("[REASON]", "leave the chat; the others see the reason")
    def cmd_quit(self, member: Member, rest: str) -> None:
        member.leave_reason = f"quit: {rest}" if rest else "quit"
        self.tell(member, "Goodbye.")
        member.outbox.end()

    @command("ROOM", "move to another room (made if new)")
    def cmd_join(self, member: Member, rest: str) -> None:
        (room,) = split_args(rest, 1, self.cmd_join)
        room = check_room(room)
        if name_key(room) == name_key(member.room.name):
            raise CommandError(f"you are already in {member.room.name}")
        self._enter(member, room)

    @command("", "list the rooms and how many are in each")
    def cmd_rooms(self, member: Member, rest: str) -> None:
        for line in self.describe_rooms():
            self.tell(member, line)

    @command("[TEXT]", "show or set your room's topic")
    def cmd_topic(self, member: Member, rest: str) -> None:
        room = member.room
        if not rest:
            self.tell(member, f"Topic of {room.name}: {room.topic}" if room.topic
                      else f"No topic is set in {room.name}.")
            return
        if self.op_password is not None and not member.is_op:
            raise CommandError("setting the topic is for operators only")
        self.registry.set_topic(room, rest)
        text = f"{member.name} set the topic: {rest}"
        self._to_room(member, [self._notice(text)], include_self=True, record=(LINE_NOTICE, [text]))

    @command("[N]", f"show the last N messages of your room (default {DEFAULT_HISTORY_LINES}, "
                    f"at most {MAX_HISTORY})")
    def cmd_history(self, member: Member, rest: str) -> None:
        count = DEFAULT_HISTORY_LINES
        if rest:
            if not rest.isdigit() or int(rest) < 1:
                raise usage_error(self.cmd_history)
            count = min(int(rest), MAX_HISTORY)
        lines = self._replay(member.room.name, count) if self.history else []
        for line in lines or [self._notice(f"No history in {member.room.name} yet.")]:
            member.send(encode_line(line))

    @command("TEXT", f"find earlier messages in your room, newest first (at most {MAX_SEARCH})")
    def cmd_search(self, member: Member, rest: str) -> None:
        if not rest:
            raise usage_error(self.cmd_search)
        found = self.history.search(member.room.name, rest) if self.history else []
        today = time.localtime().tm_yday
        for entry in found:
            member.send(encode_line(render_history(self._stamp_of(entry.time, today), entry.kind,
                                                   entry.sender, entry.text)))
        if not found:
            self.tell(member, f'No messages in {member.room.name} contain "{rest}".')

    @command("PASSWORD", "become an operator")
    def cmd_op(self, member: Member, rest: str) -> None:
        if self.op_password is None:
            raise CommandError("there are no operators on this server")
        if not hmac.compare_digest(rest.encode(), self.op_password.encode()):
            log.warning("%s (%s) gave a wrong operator password", member.name, member.address)
            raise CommandError("wrong operator password")
        member.is_op = True
        log.info("%s is now an operator", member.name)
        self.tell(member, "You are now an operator.")

    @command("NAME [REASON]", "disconnect someone", ops_only=True)
    def cmd_kick(self, member: Member, rest: str) -> None:
        name, *reason = split_args(rest, 1, self.cmd_kick, at_most=2)
        self.kick(self.find(name), member.name, "".join(reason))

    @command("NAME|ADDRESS [MINUTES]", "refuse an address (for good if no minutes)", ops_only=True)
    def cmd_ban(self, member: Member, rest: str) -> None:
        target, *minutes = split_args(rest, 1, self.cmd_ban, at_most=2)
        self.tell(member, self.ban(target, "".join(minutes), member.name))

    @command("ADDRESS", "lift a ban", ops_only=True)
    def cmd_unban(self, member: Member, rest: str) -> None:
        (target,) = split_args(rest, 1, self.cmd_unban)
        self.tell(member, self.unban(target))

    @command("", "list the bans in force", ops_only=True)
    def cmd_bans(self, member: Member, rest: str) -> None:
        for line in self.describe_bans():
            self.tell(member, line)

    # -- delivery -----------------------------------------------------------------------

    def _notice(self, text: str) -> str:
        return render_notice(self.clock.stamp(), text)

    def _to_room(self, sender: Member, lines: list[str], include_self: bool = False,
                 record: Optional[tuple[str, list[str]]] = None) -> None:
        """Send lines to the sender's room, encoded once for all; to the sender only if asked.

        ``record`` (kind, texts) is kept in the history in the same instant as the room is
        read (see :meth:`Registry.post`), and makes the lines droppable: a reader too slow to
        take them may miss them live and find them with /history.  Notices are never dropped.
        """
        kept = None
        if record is not None and self.history is not None:
            self.history.wait_for_room()  # a flood faster than the disk slows here, before any lock
            kept = Batch.of(*record)
        delivery = functools.partial(
            Delivery, data="".join(line + "\n" for line in lines).encode(ENCODING),
            droppable=record is not None, besides=None if include_self else sender)

        def post(room: Room) -> None:  # under the registry's lock: one order for both
            if kept is not None:
                self.history.add(room.name, sender.name, kept)
            room.fanout.add(delivery(room.members))

        room = self.registry.post(sender, post)
        if room is not None:
            room.fanout.flush()

    @staticmethod
    def _send_all(members: Iterable[Member], line: str) -> None:
        data = encode_line(line)
        for member in members:
            member.send(data)
