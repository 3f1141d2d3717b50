"""The chat's core: the handshake, rooms, notices, and room events on their way to delivery.

No sockets here: a :class:`~groupchat.server.registry.Member` is reached through ``send``,
``hold``, ``release`` and ``end``, none of which block, so this logic is tested by calling it
with members that record what they are sent.  The chat's slash commands are apart, in
:mod:`groupchat.server.chat_commands`, and use the operations below.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable, Iterable, Optional, Sequence, Union

from groupchat.errors import CommandError, HistoryError, InvalidNameError, NameTakenError
from groupchat.protocol import (
    LIVE_MARKER,
    NAME_PROMPT,
    PASSWORD_PROMPT,
    STAMP_FORMAT,
    LineTooLong,
    check_name,
    encode_line,
    list_names,
    message_text,
    name_key,
    render_entered,
    render_history,
    render_missed,
    render_moved,
    render_notice,
    render_private,
    render_refusal,
    render_welcome,
    split_command,
)
from groupchat.server.access import BanList
from groupchat.server.chat_commands import ChatCommands
from groupchat.server.events import RoomEvent
from groupchat.server.fanout import Delivery
from groupchat.server.flood import PRIVATE_BURST, PRIVATE_RATE, BucketTable
from groupchat.server.guesses import GuessLimiter, PasswordGate
from groupchat.server.history import Batch, Entry, HistoryStore
from groupchat.server.moderation import Moderation
from groupchat.server.notices import JOINED, LEFT, NoticeBatcher
from groupchat.server.registry import LOBBY, Member, Registry, Room, Stage
from groupchat.server.settings import MAX_LISTED_NAMES, MAX_REASON_CHARS, MAX_TOPIC_CHARS, ServerSettings

log = logging.getLogger(__name__)

_PROMPT = encode_line(NAME_PROMPT)
_PASSWORD_PROMPT = encode_line(PASSWORD_PROMPT)
# Messages relayed as one batch at most: bounds how far a flood can run ahead of the
# history writer between two checks (see HistoryStore.wait_for_room).
MAX_BATCH_LINES = 256
HISTORY_STAMP_FORMAT = "%Y-%m-%d %H:%M"  # a played-back line not from today
# Leaves whose reason is not worth showing: a socket's error says nothing to the room.
PLAIN_DISCONNECTS = ("connection closed", "connection lost")
MAX_NAME_TRIES = 5  # refused names before a connection is closed


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

    The server calls :meth:`greet`, :meth:`receive` and :meth:`leave` for each connection, and
    :meth:`tell_due_notices`, :meth:`announce` and :meth:`missed_notice`; the commands (the
    chat's and the console's) use the operations under "what commands do".

    ``settings.password``, when set, must be the first line, before the name; a wrong one is
    answered after ``settings.wrong_password_delay`` seconds (longer after a few from one
    address, and then a lockout: see :mod:`groupchat.server.guesses`) and the connection closed.
    ``settings.op_password`` enables ``/op``; operators may kick, ban and set topics (without
    it, anyone may set a topic and no one may kick or ban from the chat).  ``history`` keeps
    room messages; entering a room replays its last ``settings.replay`` of them.  Joins and
    plain leaves are told at most once per ``settings.notice_interval`` per room
    (:meth:`tell_due_notices` tells what waited); 0 tells each at once.
    """

    def __init__(self, registry: Registry, settings: ServerSettings = ServerSettings(), *,
                 history: Optional[HistoryStore] = None, bans: Optional[BanList] = None,
                 clock: Optional[Clock] = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.registry = registry
        self.settings = settings
        self.history = history
        self.clock = clock or Clock()
        self.sleep = sleep
        self.notices: NoticeBatcher[Room] = NoticeBatcher(settings.notice_interval)
        self.private_budget = BucketTable(PRIVATE_RATE if settings.rate else 0, PRIVATE_BURST)
        self.password_gate = self._gate(settings.password, "password")
        self.moderation = Moderation(registry, bans or BanList(),
                                     self._gate(settings.op_password, "operator password"), self.tell)
        self.commands = ChatCommands(self)
        self._stages = {Stage.PASSWORD: self._check_password, Stage.NAME: self._offer_name,
                        Stage.CHATTING: self._run_command}

    def _gate(self, password: Optional[str], what: str) -> Optional[PasswordGate]:
        """``password`` behind a guess limiter of its own (None if there is no such password)."""
        if password is None:
            return None
        limiter = GuessLimiter(self.settings.wrong_password_delay, self.settings.password_lockout_after,
                               self.settings.password_lockout_minutes * 60)
        return PasswordGate(password, what, limiter, lambda seconds: self.sleep(seconds))  # as now set

    # -- the life of a connection --------------------------------------------------------

    def greet(self, member: Member) -> None:
        """Ask a new connection for the password if there is one, else for its name; an address
        locked out of the password is told so at once and closed."""
        if self.password_gate is None:
            member.stage = Stage.NAME
            member.send(_PROMPT)
            return
        locked = self.password_gate.lockout(member.host)
        if locked is not None:
            self.refuse(member, locked)
            return
        member.stage = Stage.PASSWORD
        member.send(_PASSWORD_PROMPT)

    def refuse(self, member: Member, reason: str) -> None:
        """Tell a connection why it is being closed, and close it once that has gone out."""
        member.end(encode_line(render_refusal(f"{reason}; goodbye")))

    def receive(self, member: Member, lines: Sequence[Union[str, LineTooLong]]) -> None:
        """Handle the lines one read brought from a connection, in order, as its stage says.

        Consecutive messages go out as one batch: rendered once, encoded once, one send per
        member of the room, which is what lets a busy room keep up.
        """
        said: list[str] = []
        for line in lines:
            if member.stage is Stage.CLOSING:  # ended by an earlier line: the rest is not read
                break
            if member.stage is Stage.CHATTING and isinstance(line, str) and split_command(line) is None:
                if line:
                    said.append(message_text(line))
                continue
            self._say(member, said)  # what came before this line goes first
            said = []
            if isinstance(line, LineTooLong):
                self.tell(member, f"Line not sent: longer than {line.limit} bytes.")
            else:
                self._stages[member.stage](member, line)
        self._say(member, said)

    def _say(self, member: Member, texts: list[str]) -> None:
        for start in range(0, len(texts), MAX_BATCH_LINES):
            self.publish(member, RoomEvent.message(member.name, texts[start:start + MAX_BATCH_LINES]))

    def _check_password(self, member: Member, given: str) -> None:
        """One guess per connection: a wrong one is refused, and nothing after it is read."""
        refusal = self.password_gate.check(member.host, member.address, given)
        if refusal is None:
            member.stage = Stage.NAME
            member.send(_PROMPT)
            return
        member.leave_reason = refusal
        self.refuse(member, refusal)

    def _offer_name(self, member: Member, raw: str) -> None:
        try:
            self.registry.claim(member, self.moderation.check_name(check_name(raw)))
        except (InvalidNameError, NameTakenError) as exc:
            member.name_tries += 1
            if member.name_tries >= MAX_NAME_TRIES:  # a thousand names in one write end here
                member.send(encode_line(render_refusal(str(exc))))
                self.refuse(member, f"{MAX_NAME_TRIES} names refused")
            else:
                member.send(encode_line(render_refusal(str(exc))) + _PROMPT)
            return
        refusal = self.moderation.refusal(member)  # a ban made since it connected, or just now
        if refusal is not None:
            log.warning("%s (%s) refused: %s", member.name, member.address, refusal)
            self.refuse(member, refusal)
            return
        log.info("%s joined from %s", member.name, member.address)
        member.stage = Stage.CHATTING
        self.enter(member, LOBBY, welcome=True)

    def _run_command(self, member: Member, line: str) -> None:
        self.commands.table.run(member, line, self.tell, lambda m: m.is_op)

    def leave(self, member: Member, reason: str = "") -> None:
        """Forget a connection; if it was in a room, tell the others there it left (and why).

        Every leave is told with the room's other comings and goings (see
        :mod:`groupchat.server.notices`), so a crowd quitting with long reasons costs the room
        one line a second; a reason worth reading (a quit message, a kick, a cut-off) is
        shown when the leave is told on its own.
        """
        room = self.registry.disconnect(member)
        if room is None:
            return
        reason = member.leave_reason or reason
        log.info("%s left from %s%s", member.name, member.address, f" ({reason})" if reason else "")
        shown = "" if reason.startswith(PLAIN_DISCONNECTS) else reason
        self._tell_room(room, self.notices.add(room, LEFT, member.name, len(room), shown))

    # -- rooms -----------------------------------------------------------------------------

    def enter(self, member: Member, room_name: str, welcome: bool = False) -> None:
        """Move a member into a room: its greeting and the room's recent history first, then live chat.

        The member holds live lines while the greeting is made, and history stops exactly
        where live delivery starts, so nothing is shown twice or missed.
        """
        member.hold()
        room_before, room, live_from = self.registry.enter(
            member, room_name, (lambda: self.history.next_id) if self.history else (lambda: 0))
        names, count = self.registry.glimpse(room, member, MAX_LISTED_NAMES)
        # The rooms hear of it before the member hears its welcome, so anything that follows
        # the welcome (its first line, the next person to come) comes after the notice too.
        if room_before is not None:
            self._tell_room(room_before, render_moved(member.name, room.name))
        self._tell_room(room, self.notices.add(room, JOINED, member.name, count), besides=member)
        others = list_names(names, MAX_LISTED_NAMES, total=count)
        greeting = [render_welcome(member.name, others) if welcome
                    else self._notice(render_entered(room.name, others))]
        if room.topic:
            greeting.append(self._notice(f"Topic of {room.name}: {room.topic}"))
        played = self.recent(room.name, self.settings.replay, before=live_from)
        if played:
            greeting += played + [self._notice(LIVE_MARKER)]
        member.release(b"".join(map(encode_line, greeting)))

    def recent(self, room: str, count: int, before: Optional[int] = None) -> list[str]:
        """A room's last ``count`` stored lines, as history lines; none if history cannot be read."""
        if not count or self.history is None:
            return []
        try:
            return self._played(self.history.recent(room, count, before=before))
        except HistoryError as exc:
            log.error("replay for %s: %s", room, exc)
            return []

    def search(self, room: str, text: str) -> list[str]:
        """The stored lines of a room that contain ``text``, newest first, as history lines."""
        return self._played(self.history.search(room, text)) if self.history else []

    @staticmethod
    def _played(entries: Iterable[Entry]) -> list[str]:
        """Stored lines as played back: stamped with their date when not from today."""
        today = time.localtime().tm_yday
        lines = []
        for entry in entries:
            moment = time.localtime(entry.time)
            stamp = time.strftime(STAMP_FORMAT if moment.tm_yday == today else HISTORY_STAMP_FORMAT, moment)
            lines.append(render_history(stamp, entry.kind, entry.sender, entry.text))
        return lines

    # -- what commands do --------------------------------------------------------------------

    def tell(self, member: Member, text: str, last: bool = False) -> None:
        """A notice to one member only; ``last``: the last line it gets, then its connection ends."""
        data = encode_line(self._notice(text))
        if last:
            member.end(data)
        else:
            member.send(data)

    def rename(self, member: Member, new: str) -> None:
        """Give a member a new name, or raise :class:`CommandError` saying why not; its room hears it."""
        try:
            old = self.registry.claim(member, check_name(new))
        except (InvalidNameError, NameTakenError) as exc:
            raise CommandError(f"Sorry, {exc}") from None
        log.info("%s is now known as %s", old, member.name)
        self.publish(member, RoomEvent.renamed(old, member.name))

    def set_topic(self, member: Member, topic: str) -> None:
        """Set the topic of a member's room; the room hears who set it."""
        if self.settings.op_password is not None and not member.is_op:
            raise CommandError("setting the topic is for operators only")
        if len(topic) > MAX_TOPIC_CHARS:
            raise CommandError(f"a topic can have at most {MAX_TOPIC_CHARS} characters")
        self.registry.set_topic(member.room, topic)
        self.publish(member, RoomEvent.topic_set(member.name, topic))

    def private(self, sender: Member, target: Member, text: str) -> None:
        """A /msg: the target sees it, and the sender sees it as sent.  One address's messages
        to one person are paced (flood.PRIVATE_RATE): one too many is refused, not queued."""
        if self.private_budget.take((sender.host, name_key(target.name)), only_if_free=True):
            raise CommandError(f"not sent: at most {PRIVATE_RATE:g} private message a second to one "
                               f"person, after {PRIVATE_BURST} at once; wait a moment")
        stamp = self.clock.stamp()
        # Droppable like room lines, so no one can get someone else cut off with them.
        target.send(encode_line(render_private(stamp, sender.name, text)), True)
        sender.send(encode_line(render_private(stamp, sender.name, text, to=target.name)))

    def quit(self, member: Member, reason: str) -> None:
        """End a member's connection at its own request; its room hears the reason."""
        member.leave_reason = f"quit: {reason[:MAX_REASON_CHARS]}" if reason else "quit"
        self.tell(member, "Goodbye.", last=True)

    def describe_rooms(self) -> list[str]:
        return [f"{info.name} ({info.count})" + (f": {info.topic}" if info.topic else "")
                for info in self.registry.rooms()] or ["No rooms: nobody is here."]

    def find(self, name: str) -> Member:
        """The member called ``name``, or a :class:`CommandError` saying there is none."""
        member = self.registry.find(name)
        if member is None or member.room is None:
            raise CommandError(f'no one called "{name}" is here')
        return member

    # -- delivery ---------------------------------------------------------------------------

    def publish(self, sender: Member, event: RoomEvent) -> None:
        """Send a room event to the sender's room: rendered once for all, kept in history in
        the same instant as the room is read (see :meth:`Registry.post`), so every member and
        the history see one order.

        A kept event is droppable: a reader too slow to take it live may miss it and find it
        with /history.  Notices that are not kept are never dropped.
        """
        kept = None
        if event.kept and self.history is not None:
            self.history.wait_for_room()  # a flood faster than the disk slows here, before any lock
            kept = Batch.of(event.kind, event.texts)
        delivery = functools.partial(Delivery, data=event.render(self.clock.stamp()), droppable=event.kept,
                                     besides=None if event.echo else sender)

        def post(room: Room) -> None:  # under the registry's lock: one order for both
            if kept is not None:
                self.history.add(room.name, sender.name, kept)
            room.fanout.add(delivery(room.members))

        room = self.registry.post(sender, post)
        if room is not None:
            room.fanout.flush()

    def tell_due_notices(self) -> None:
        """Tell each room the comings and goings that waited for its next notice line."""
        for room, text in self.notices.take_due():
            self._tell_room(room, text)

    def announce(self, text: str) -> None:
        """A server notice to every member in every room."""
        self._send_all(self.registry.named(), self._notice(text))

    def missed_notice(self, count: int) -> bytes:
        """What a reader too slow for its queue is told in place of the messages it lost."""
        return encode_line(self._notice(render_missed(count)))

    def _tell_room(self, room: Room, text: Optional[str], besides: Optional[Member] = None) -> None:
        if text is not None:
            self._send_all((m for m in self.registry.members_in(room) if m is not besides),
                           self._notice(text))

    def _notice(self, text: str) -> str:
        return render_notice(self.clock.stamp(), text)

    @staticmethod
    def _send_all(members: Iterable[Member], line: str) -> None:
        data = encode_line(line)
        for member in members:
            member.send(data)
