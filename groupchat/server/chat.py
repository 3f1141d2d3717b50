"""The chat's core: the handshake, rooms, notices, and room events on their way to delivery.

No sockets here: a :class:`~groupchat.server.registry.Member` is reached through ``send``,
``hold``, ``release`` and ``end``, none of which block, so this logic is tested by calling it
with members that record what they are sent.  The chat's slash commands are apart, in
:mod:`groupchat.server.chat_commands`, and use the operations below.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from groupchat import jsonl
from groupchat.errors import (
    BadOperationError,
    ClusterError,
    CommandError,
    GroupchatError,
    HistoryError,
    InvalidNameError,
    NameTakenError,
    NotSentError,
    UsageError,
)
from groupchat.jsonl import iso_time, render_event
from groupchat.net import address_group
from groupchat.protocol import (
    EVENT_ID,
    LINE_NOTICE,
    LIVE_MARKER,
    MAX_HISTORY,
    NAME_PROMPT,
    PASSWORD_PROMPT,
    STAMP_FORMAT,
    LineTooLong,
    check_name,
    clean_text,
    encode_line,
    list_names,
    message_text,
    name_key,
    render_entered,
    render_history,
    render_missed,
    render_missed_since,
    render_notice,
    render_private,
    render_refusal,
    render_session,
    render_throttled,
    render_welcome,
    split_command,
)
from groupchat.server.access import BanList
from groupchat.server.chat_commands import ChatCommands, profile
from groupchat.server.events import EVENT_TYPES, Out, RoomEvent
from groupchat.server.fanout import Delivery
from groupchat.server.flood import PRIVATE_BURST, PRIVATE_RATE, BucketTable
from groupchat.server.guesses import GuessLimiter, PasswordGate
from groupchat.server.history import Batch, Entry, HistoryStore
from groupchat.server.moderation import Moderation, no_such_name
from groupchat.server.notices import BACK, HELD, JOINED, LEFT, Comings, NoticeBatcher
from groupchat.server.registry import LOBBY, Member, Registry, Room, RoomInfo, Stage
from groupchat.server.sessions import SessionTable
from groupchat.server.settings import MAX_LISTED_NAMES, MAX_REASON_CHARS, MAX_TOPIC_CHARS, ServerSettings

if TYPE_CHECKING:
    from groupchat.server.cluster.bridge import Bridge

log = logging.getLogger(__name__)

_PROMPT = Out.line(NAME_PROMPT, "prompt", **{"for": "name"})
_PASSWORD_PROMPT = Out.line(PASSWORD_PROMPT, "prompt", **{"for": "password"})
# Messages relayed as one batch at most: bounds how far a flood can run ahead of the
# history writer between two checks (see HistoryStore.wait_for_room).
MAX_BATCH_LINES = 256
HISTORY_STAMP_FORMAT = "%Y-%m-%d %H:%M"  # a played-back line not from today
END_OF_ANSWER = "End of the lines asked for."  # after /history's or /search's lines
# Leaves whose reason is not worth showing: a socket's error says nothing to the room.
PLAIN_DISCONNECTS = ("connection closed", "connection lost")
MAX_NAME_TRIES = 5  # refused names before a connection is closed


class Clock:
    """The ``HH:MM`` stamp put on lines, computed once a minute rather than once a line."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._minute = -1
        self._stamp = ""

    def now(self) -> float:
        """Seconds since the epoch: the time of a JSON event."""
        return self._now()

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
        self._ids = _IdSequence()
        # Sessions, held for resume_window after a drop (see groupchat.server.sessions).
        self.sessions: Optional[SessionTable[Member]] = (
            SessionTable(settings.resume_window) if settings.resume_window else None)
        self.closing = False  # the server is stopping: connections end, sessions are not held
        self._cluster: Optional[Bridge] = None
        self._stages = {Stage.PASSWORD: self._check_password, Stage.NAME: self._offer_name,
                        Stage.CHATTING: self._run_command}

    @property
    def cluster(self) -> Optional[Bridge]:
        """One node of a cluster (``--redis``): room events go out through Redis and are
        delivered as they come back, names are held across nodes, and moderation reaches every
        node.  None: this server alone."""
        return self._cluster

    @cluster.setter
    def cluster(self, bridge: Optional[Bridge]) -> None:
        self._cluster = self.moderation.cluster = bridge

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
            member.say(_PROMPT)
            return
        locked = self.password_gate.lockout(member.host)
        if locked is not None:
            self.refuse(member, locked, jsonl.BYE_LOCKED_OUT)
            return
        member.stage = Stage.PASSWORD
        member.say(_PASSWORD_PROMPT)

    def refuse(self, member: Member, reason: str, code: str = jsonl.BYE_REFUSED) -> None:
        """Tell a connection why it is being closed, and close it once that has gone out."""
        member.end(Out.line(render_refusal(f"{reason}; goodbye"), "bye", code=code, message=reason))

    def receive(self, member: Member, lines: Sequence[Union[str, LineTooLong]]) -> None:
        """Handle the lines one read brought from a connection, in order, as its stage says.

        Consecutive messages go out as one batch: rendered once, encoded once, one send per
        member of the room, which is what lets a busy room keep up.  A JSON connection's
        operations (see :mod:`groupchat.jsonl`) are taken as the lines they stand for, and
        each labelled one is answered: an ack once done, or an error with its label.
        """
        said: list[str] = []
        labels: list[Optional[str]] = []
        for line in lines:
            if member.stage is Stage.CLOSING:  # ended by an earlier line: the rest is not read
                break
            label = None
            if member.json and isinstance(line, str):
                if jsonl.is_operation(line):
                    try:
                        line, label = _operation_line(line)
                    except BadOperationError as exc:
                        self._say(member, said, labels)
                        said, labels = [], []
                        self.error(member, exc, exc.label)
                        continue
                if len(line) * 4 > self.settings.max_line and len(line.encode()) > self.settings.max_line:
                    line = LineTooLong(self.settings.max_line)  # (its bytes come in a longer JSON line)
            if member.stage is Stage.CHATTING and isinstance(line, str) and split_command(line) is None:
                if line:
                    said.append(message_text(line))
                    labels.append(label)
                continue
            self._say(member, said, labels)  # what came before this line goes first
            said, labels = [], []
            if isinstance(line, LineTooLong):
                self.error(member, CommandError(f"Line not sent: longer than {line.limit} bytes.",
                                                code=jsonl.LINE_TOO_LONG), label)
            elif member.stage is not Stage.CHATTING and (mode := _mode_asked(line)) is not None:
                try:
                    self.switch_mode(member, mode)
                except UsageError as exc:
                    self.error(member, exc, label)
            else:
                self._stages[member.stage](member, line, label)
        self._say(member, said, labels)

    def _say(self, member: Member, texts: list[str], labels: list[Optional[str]]) -> None:
        for start in range(0, len(texts), MAX_BATCH_LINES):
            try:
                first = self.publish(member, RoomEvent.message(member.name, texts[start:start + MAX_BATCH_LINES]))
            except NotSentError as exc:  # a cluster's Redis did not take them: said, never silence
                said_labels = [label for label in labels[start:start + MAX_BATCH_LINES] if label is not None]
                for label in said_labels or [None]:
                    self.error(member, exc, label)
                continue
            acks = [render_event("ack", label=label, id=first + n)
                    for n, label in enumerate(labels[start:start + MAX_BATCH_LINES]) if label is not None]
            if acks and first is not None and member.json:
                member.send(b"".join(acks))

    def switch_mode(self, member: Member, mode: str) -> None:
        """``/mode json`` or ``/mode text`` (else :class:`UsageError`): answered in the new
        format; before the handshake is over, the question asked is asked again, so a client
        switching first still sees it."""
        if mode not in (jsonl.MODE_JSON, jsonl.MODE_TEXT):
            raise UsageError("usage: /mode json|text")
        member.json = mode == jsonl.MODE_JSON
        answer = Out.line(self._notice(f"Mode: {mode}."), "mode", mode=mode)
        if member.stage is Stage.NAME:
            answer += _PROMPT
        elif member.stage is Stage.PASSWORD:
            answer += _PASSWORD_PROMPT
        member.say(answer)

    def _check_password(self, member: Member, given: str, label: Optional[str] = None) -> None:
        """One guess per connection: a wrong one is refused, and nothing after it is read."""
        refusal = self.password_gate.check(member.host, member.address, given)
        if refusal is None:
            member.stage = Stage.NAME
            member.say(_PROMPT)
            return
        member.leave_reason = refusal
        self.refuse(member, refusal, jsonl.BYE_WRONG_PASSWORD)

    def _offer_name(self, member: Member, raw: str, label: Optional[str] = None) -> None:
        command = split_command(raw)
        if command is not None and command[0] == "resume":
            self._resume(member, command[1], label)
            return
        try:
            self._claim(member, self.moderation.check_name(check_name(raw)))
        except (InvalidNameError, NameTakenError, ClusterError) as exc:
            member.name_tries += 1
            refused = self._error(exc, label, text=render_refusal(str(exc)))
            if member.name_tries >= MAX_NAME_TRIES:  # a thousand names in one write end here
                member.say(refused)
                self.refuse(member, f"{MAX_NAME_TRIES} names refused")
            else:
                member.say(refused + _PROMPT)
            return
        refusal = self.moderation.refusal(member)  # a ban made since it connected, or just now
        if refusal is not None:
            log.warning("%s (%s) refused: %s", member.name, member.address, refusal)
            self.refuse(member, refusal, jsonl.BYE_BANNED)
            return
        log.info("%s joined from %s", member.name, member.address)
        member.stage = Stage.CHATTING
        self.enter(member, LOBBY, welcome=True)

    def _run_command(self, member: Member, line: str, label: Optional[str] = None) -> None:
        """Run a command; a labelled one ends with its ack, or its error carries the label."""
        failed = []

        def fail(caller: Member, exc: GroupchatError) -> None:
            failed.append(exc)
            self.error(caller, exc, label)

        member.published = None
        self.commands.table.run(member, line, fail, lambda m: m.is_op)
        if label is not None and not failed and member.json and member.stage is Stage.CHATTING:
            member.send(render_event("ack", label=label, id=member.published))  # a /me's, a topic's

    def leave(self, member: Member, reason: str = "") -> None:
        """Forget a connection; if it was in a room, tell the others there it left (and why).

        Every leave is told with the room's other comings and goings (see
        :mod:`groupchat.server.notices`), so a crowd quitting with long reasons costs the room
        one line a second; a reason worth reading (a quit message, a kick, a cut-off) is
        shown when the leave is told on its own.
        """
        if self._hold(member, reason):
            return
        if self.sessions is not None:
            self._end_session(self.sessions.close(member))
        room = self.registry.disconnect(member)
        self._forget(member, room)
        if room is None:
            return
        reason = member.leave_reason or reason
        if self.closing:  # everyone is leaving, and was told why: the room hears nothing more
            log.info("%s left from %s (the server is shutting down)", member.name, member.address)
            return
        log.info("%s left from %s%s", member.name, member.address, f" ({reason})" if reason else "")
        shown = "" if reason.startswith(PLAIN_DISCONNECTS) else reason
        self._tell_room(room, self.notices.add(room, LEFT, member.name, self._audience(len(room)), shown))

    # -- sessions (see groupchat.server.sessions) --------------------------------------------

    def _hold(self, member: Member, reason: str) -> bool:
        """Hold the session of a connection that ended, for it to be resumed; False if it is not
        to be held: not named, ended by /quit, a kick, a ban or a refusal (which end it as
        CLOSING), held already, or the server is stopping."""
        if self.sessions is None or self.closing or member.stage is not Stage.CHATTING:
            return False
        held_from = self.registry.hold(member, self._next_id)
        if not self.sessions.hold(member, held_from, member.leave_reason or reason):
            return False
        log.info("%s dropped off from %s (%s); session held for %g s", member.name, member.address,
                 reason, self.sessions.window)
        room = member.room
        if room is not None:
            self._tell_room(room, self.notices.add(room, HELD, member.name, self._audience(len(room) - 1)))
        if self.cluster is not None:  # a node it resumes on says it is back
            self.cluster.keep_session(member)
        return True

    def expire_sessions(self) -> None:
        """End the held sessions whose window has passed: their rooms hear they left."""
        for session in self.sessions.expired() if self.sessions is not None else ():
            held = session.holder
            self._end_session(session.digest)
            room = self.registry.disconnect(held)
            self._forget(held, room)
            if room is not None:
                log.info("%s left from %s (%s; not resumed)", held.name, held.address, session.reason)
                shown = "" if session.reason.startswith(PLAIN_DISCONNECTS) else session.reason
                self._tell_room(room, self.notices.add(room, LEFT, held.name, self._audience(len(room)), shown))

    def _resume(self, member: Member, rest: str, label: Optional[str]) -> None:
        """``/resume TOKEN [LAST_ID]`` in place of a name: the session's name, room and operator
        status on this connection, then exactly the room's lines it has not seen (after
        LAST_ID, else after the last the old connection was handed), then live lines."""
        token, _, last = rest.partition(" ")
        last = last.strip()
        found = self.sessions.resume(token) if self.sessions is not None and token else None
        # In a cluster a token works once on any node: what Redis keeps of it goes either way.
        elsewhere = (self.cluster.take_session(token)
                     if self.cluster is not None and self.sessions is not None and token else None)
        if found is None and elsewhere is not None and (not last or EVENT_ID.fullmatch(last)):
            self._resume_from(member, elsewhere, int(last) if last else None, label)
            return
        if found is None or (last and not EVENT_ID.fullmatch(last)):
            why = ("usage: /resume TOKEN [LAST_ID]" if found is not None else
                   "no session to resume with that token (unknown, used or expired); give your name")
            member.say(self._error(CommandError(why, code=jsonl.RESUME_FAILED), label,
                                   text=render_refusal(why)) + _PROMPT)
            return
        session, token = found
        held = session.holder
        still_open = self.registry.is_open(held)
        self.sessions.move(session, member)
        member.stage = Stage.CHATTING
        member.hold()
        room, live_from = self.registry.resume(held, member, self._next_id)
        if still_open:  # it never noticed it dropped: it ends now, and its leaving is no one's news
            self.tell(held, "Your session was resumed from another connection.", last=jsonl.BYE_REFUSED)
        if room is None:  # its window ended as it was resumed
            self.refuse(member, "your session ended just now; connect again and give your name")
            return
        after = int(last) if last else session.held_from - 1
        log.info("%s resumed from %s", member.name, member.address)
        self.changed(member)  # in a cluster, its new token is the one another node may resume
        names, count = self._glimpse(room, member)
        self._tell_room(room, self.notices.add(room, BACK, member.name, self._audience(count)))
        entries, missed = self.missed_since(room.name, after, before=live_from)
        greeting = self._session(member, token) + Out.line(
            render_welcome(member.name, list_names(names, MAX_LISTED_NAMES, total=count)),
            "welcome", name=member.name, room=room.name, names=names, count=count, resumed=True)
        if room.topic:
            greeting += self.topic(room.name, room.topic)
        greeting += self.played(room.name, entries, replay=True, missed=missed)
        member.release(greeting.json if member.json else greeting.text)

    def _resume_from(self, member: Member, session: dict[str, Any], last: Optional[int],
                     label: Optional[str]) -> None:
        """A resume of a session another node held (it died, say): its name, room and operator
        status here, then the room's lines after ``last`` that this node has (the last few,
        without it), then live lines; the node that held it lets it go, if it is alive."""
        name = session["name"]
        try:
            self.cluster.claim(name, replacing=session["node"])
            try:
                self.registry.claim(member, name)
            except NameTakenError:
                self.cluster.release(name)
                raise
        except (NameTakenError, ClusterError) as exc:
            why = f"your session's name was taken meanwhile: {exc}; give a name"
            member.say(self._error(CommandError(why, code=jsonl.RESUME_FAILED), label, text=render_refusal(why))
                       + _PROMPT)
            return
        self.cluster.moved(name, session["node"])
        member.is_op = session["op"]
        member.stage = Stage.CHATTING
        log.info("%s resumed from %s the session it had on node %s", name, member.address, session["node"])
        self.enter(member, session["room"], welcome=True, resumed=True, after=last,
                   told=self.cluster.told_away(session))

    def moved_away(self, name: str) -> None:
        """``name`` resumed its session on another node: it ends here without a word to the room
        (the other node tells it the person is back)."""
        member = self.registry.find(name)
        if member is None:
            return
        still_open = self.registry.is_open(member)
        if self.sessions is not None:
            self._end_session(self.sessions.close(member))
        self.registry.disconnect(member)
        if still_open:
            self.tell(member, "Your session was resumed on another server.", last=jsonl.BYE_REFUSED)

    def _end_session(self, digest: Optional[bytes]) -> None:
        """In a cluster, a session that ended is no longer kept in Redis; but not as the server
        stops: its people may resume on another node (where the session runs out as it would here)."""
        if digest is not None and self.cluster is not None and not self.closing:
            self.cluster.end_session(digest)

    def _session(self, member: Member, token: str) -> Out:
        """The line before the welcome that gives a connection its resume token."""
        return Out.line(render_session(token, self.sessions.window, member.name), "session", token=token,
                        window=self.sessions.window)

    def missed_since(self, room: str, after: int, before: Optional[int] = None) -> tuple[list[Entry], int]:
        """The first lines (at most MAX_HISTORY) said in a room after id ``after``, and how many in all."""
        if self.history is None:
            return [], 0
        try:
            return self.history.after(room, after, MAX_HISTORY, before=before)
        except HistoryError as exc:
            log.error("history after %d in %s: %s", after, room, exc)
            return [], 0

    def _next_id(self) -> int:
        """The id the next event will get: everything before it was handed out already."""
        return self.history.next_id if self.history is not None else self._ids.peek()

    # -- rooms -----------------------------------------------------------------------------

    def enter(self, member: Member, room_name: str, welcome: bool = False, resumed: bool = False,
              after: Optional[int] = None, told: bool = True) -> None:
        """Move a member into a room: its greeting and the room's recent history first, then live chat.

        The member holds live lines while the greeting is made, and history stops exactly
        where live delivery starts, so nothing is shown twice or missed.  ``resumed``: it is
        back (a session another node held), and is played the lines after id ``after`` if given;
        the room hears it is back only if it was ``told`` it was away.
        """
        if self.cluster is not None:  # before entering: what the room says from here is read
            self.cluster.check_room(room_name)  # (a new room like one in use on another node: refused)
            self.cluster.watch(room_name, after)  # (from after ``after``, if this node did not read it)
        member.hold()
        try:
            room_before, room, live_from = self.registry.enter(member, room_name, self._next_id)
        except CommandError:  # a room that looks like one in use: nothing changed
            member.release(b"")
            raise
        token = self.sessions.open(member) if welcome and self.sessions is not None else None
        arrived = None
        if self.cluster is not None:
            arrived = self.cluster.arrive(member, room_before.name if room_before is not None else None,
                                          MAX_LISTED_NAMES)
        if arrived is not None:  # in a cluster: the room's topic and people on every node
            topic, names, count = arrived
            if topic and topic != room.topic:  # set where no one here saw it
                self.registry.set_topic(room, topic)
        else:
            names, count = self.registry.glimpse(room, member, MAX_LISTED_NAMES)
        # The rooms hear of it before the member hears its welcome, so anything that follows
        # the welcome (its first line, the next person to come) comes after the notice too.
        if room_before is not None:
            self._tell_room(room_before, Comings([], [member.name], to=room.name))
        if told:
            self._tell_room(room, self.notices.add(room, BACK if resumed else JOINED, member.name,
                                                   self._audience(count)))
        others = list_names(names, MAX_LISTED_NAMES, total=count)
        if welcome:
            greeting = Out.line(render_welcome(member.name, others), "welcome", name=member.name,
                                room=room.name, names=names, count=count, resumed=resumed or None)
            if token is not None:
                greeting = self._session(member, token) + greeting
        else:
            greeting = Out.line(self._notice(render_entered(room.name, others)), "enter",
                                room=room.name, names=names, count=count)
        if room.topic:
            greeting += self.topic(room.name, room.topic)
        if after is not None:  # a resume: exactly what it missed
            entries, missed = self.missed_since(room.name, after, before=live_from)
            greeting += self.played(room.name, entries, replay=True, missed=missed)
        elif played := [entry for entry in self.recent(room.name, self.settings.replay, before=live_from)
                        if entry.kind != LINE_NOTICE]:  # a topic set earlier: they were just told the one that holds
            greeting += self.played(room.name, played, replay=True)
        member.release(greeting.json if member.json else greeting.text)

    def _glimpse(self, room: Room, member: Member) -> tuple[list[str], int]:
        """The first names of the others in a room and how many they are, for a welcome: in a
        cluster, on every node (on this one alone while Redis is away)."""
        if self.cluster is not None:
            try:
                return self.cluster.glimpse(room.name, member.name, MAX_LISTED_NAMES)
            except ClusterError as exc:
                log.warning("the names in %s on other servers: %s", room.name, exc)
        return self.registry.glimpse(room, member, MAX_LISTED_NAMES)

    def recent(self, room: str, count: int, before: Optional[int] = None) -> list[Entry]:
        """A room's last ``count`` stored lines; none if history cannot be read."""
        if not count or self.history is None:
            return []
        try:
            return self.history.recent(room, count, before=before)
        except HistoryError as exc:
            log.error("replay for %s: %s", room, exc)
            return []

    def search(self, room: str, text: str) -> list[Entry]:
        """The stored lines of a room that contain ``text``, newest first."""
        return self.history.search(room, text) if self.history else []

    def played(self, room: str, entries: Sequence[Entry], replay: bool = False,
               query: Optional[str] = None, none: str = "", missed: Optional[int] = None,
               title: str = "") -> Out:
        """Stored lines played back, stamped with their date when not from today; as JSON,
        ``history`` events and then one ``history_end``.  A replay ends with a line saying
        live chat starts there; an answer (/history, /search) has its ``title`` above and an
        end line below, or says ``none`` when there are no lines.  ``missed``: the lines are
        the first of that many said after an id (a resume, /history after)."""
        def text() -> bytes:
            today = time.localtime().tm_yday
            lines = [self._notice(render_missed_since(missed, len(entries), entries[-1].id if entries else 0))
                     ] if missed is not None else []
            if title and entries:
                lines.append(self._notice(title))
            for entry in entries:
                moment = time.localtime(entry.time)
                stamp = time.strftime(STAMP_FORMAT if moment.tm_yday == today else HISTORY_STAMP_FORMAT, moment)
                lines.append(render_history(stamp, entry.kind, entry.sender, entry.text))
            if replay:
                lines.append(self._notice(LIVE_MARKER))
            elif not entries and none:
                lines.append(self._notice(none))
            elif entries:
                lines.append(self._notice(END_OF_ANSWER))
            return b"".join(map(encode_line, lines))

        def json() -> bytes:
            return b"".join([render_event("history", replay=replay, id=entry.id, room=entry.room,
                                          ts=iso_time(entry.time), **{"from": entry.sender},
                                          kind=EVENT_TYPES[entry.kind], text=entry.text, query=query)
                             for entry in entries]
                            + [render_event("history_end", room=room, replay=replay, count=len(entries),
                                            missed=missed, query=query)])

        return Out(text, json)

    def topic(self, room: str, topic: str) -> Out:
        """A room's topic, as said on entering it or asked with /topic."""
        return Out.line(self._notice(f"Topic of {room}: {topic}" if topic else f"No topic is set in {room}."),
                        "topic", room=room, text=topic)

    # -- what commands do --------------------------------------------------------------------

    def tell(self, member: Member, text: str, last: Optional[str] = None) -> None:
        """A notice to one member only; ``last`` (a JSON bye code, see :mod:`groupchat.jsonl`):
        the last line it gets, then its connection ends."""
        if last is None:
            member.say(Out.line(self._notice(text), "notice", text=text))
        else:
            member.end(Out.line(self._notice(text), "bye", code=last, message=text))

    def tell_throttled(self, member: Member, waiting: int, rate: float) -> None:
        """Flood control holds a member's lines back: it is told once per spell, so it knows
        why the others see them late."""
        member.say(Out.line(self._notice(render_throttled(waiting, rate)), "throttled", waiting=waiting, rate=rate))

    def reply(self, member: Member, lines: list[str], kind: str, **fields: Any) -> None:
        """An answer to one member: notices in text, one JSON event of ``kind`` with ``fields``."""
        member.say(Out(lambda: b"".join(encode_line(self._notice(line)) for line in lines),
                       lambda: render_event(kind, **fields)))

    def error(self, member: Member, exc: GroupchatError, label: Optional[str] = None) -> None:
        """Something a member sent was refused: a notice in text, an ``error`` event in JSON."""
        member.say(self._error(exc, label))

    def _error(self, exc: GroupchatError, label: Optional[str], text: Optional[str] = None) -> Out:
        return Out.line(text if text is not None else self._notice(str(exc)), "error", code=exc.code,
                        message=str(exc), label=label)

    def rename(self, member: Member, new: str) -> None:
        """Give a member a new name, or raise :class:`CommandError` saying why not; its room hears it."""
        try:
            old = self._claim(member, check_name(new))
        except (InvalidNameError, NameTakenError, ClusterError) as exc:
            raise CommandError(f"Sorry, {exc}", code=exc.code) from None
        if self.cluster is not None and old is not None and name_key(old) != name_key(member.name):
            self.cluster.release(old)
            if member.room is not None:
                self.cluster.leave(member.room.name, old)
                self.cluster.enter(member.room.name, member.name)
        self.changed(member)
        log.info("%s is now known as %s", old, member.name)
        self.publish(member, RoomEvent.renamed(old, member.name))

    def set_topic(self, member: Member, topic: str) -> None:
        """Set the topic of a member's room; the room hears who set it."""
        if self.settings.op_password is not None and not member.is_op:
            raise CommandError("setting the topic is for operators only", code=jsonl.NOT_OP)
        if len(topic) > MAX_TOPIC_CHARS:
            raise CommandError(f"a topic can have at most {MAX_TOPIC_CHARS} characters")
        self.registry.set_topic(member.room, topic)
        if self.cluster is not None:  # for the nodes where no one is in the room yet
            self.cluster.keep_topic(member.room.name, topic)
        self.publish(member, RoomEvent.topic_set(member.name, topic))

    def private(self, sender: Member, name: str, text: str) -> None:
        """A /msg to ``name``: they see it, and the sender sees it as sent; in a cluster, someone
        of that name on another node gets it there.  One address's (an IPv6 /64's) messages to one
        person are paced (flood.PRIVATE_RATE): one too many is refused, not queued."""
        target = self.registry.find(name)
        here = target is not None and target.room is not None
        if not here and self.cluster is None:
            raise no_such_name(name)
        to = target.name if here else name
        if self.private_budget.take((address_group(sender.host), name_key(to)), only_if_free=True):
            raise CommandError(f"not sent: at most {PRIVATE_RATE:g} private message a second to one "
                               f"person, after {PRIVATE_BURST} at once; wait a moment", code=jsonl.RATE_LIMITED)
        fields = {"ts": iso_time(self.clock.now()), "from": sender.name, "to": to, "text": text}
        if here:
            fields = {"id": self._reserve(1), **fields}
            self.tell_private(target, fields)
        else:
            fields = {"id": self.cluster.send_private(to, fields), **fields}
        sender.say(Out.line(render_private(self.clock.stamp(), sender.name, text, to=to), "dm", **fields))
        if here and target.away:
            self.tell(sender, f"{target.name} is away: {target.away}")

    def tell_private(self, target: Member, fields: dict[str, Any]) -> None:
        """A private message (``dm`` event fields) reaching ``target``, from here or another node."""
        sender = fields["from"]
        if name_key(sender) not in target.ignoring:  # an ignored sender is not told: it changes nothing
            # Droppable like room lines, so no one can get someone else cut off with them.
            target.say(Out.line(render_private(self.clock.stamp(), sender, fields["text"]), "dm", **fields), True)
            target.last_private_from = sender

    def quit(self, member: Member, reason: str) -> None:
        """End a member's connection at its own request; its room hears the reason."""
        member.leave_reason = f"quit: {reason[:MAX_REASON_CHARS]}" if reason else "quit"
        self.tell(member, "Goodbye.", last=jsonl.BYE_QUIT)

    def _audience(self, here: int) -> int:
        """Who hears of a coming or going: ``here`` on this server; in a cluster, anyone may on another."""
        return here if self.cluster is None else max(here, 1)

    def _claim(self, member: Member, name: str) -> Optional[str]:
        """:meth:`Registry.claim`, in a cluster once every node's people have been asked."""
        if self.cluster is not None:
            self.cluster.claim(name, renaming=member.name)  # a name this node holds already is this node's to give
        return self.registry.claim(member, name)

    def _forget(self, member: Member, room: Optional[Room]) -> None:
        """In a cluster, free the name and the place of a member that is gone for good (not one
        whose name went on to a resumed connection; not while the server stops, whose node frees all)."""
        if self.cluster is None or self.closing or member.name is None:
            return
        if room is not None:
            self.cluster.leave(room.name, member.name)
        if self.registry.find(member.name) is None:
            self.cluster.release(member.name)

    def describe_rooms(self) -> list[str]:
        return [f"{info.name} ({info.count})" + (f": {info.topic}" if info.topic else "")
                for info in self.rooms()] or ["No rooms: nobody is here."]

    def rooms(self) -> list[RoomInfo]:
        """Every room someone is in, with how many and its topic, largest first; in a cluster,
        on every node."""
        here = self.registry.rooms()
        if self.cluster is None:
            return here
        known = {name_key(info.name): info for info in here}
        infos = [RoomInfo(known[key].name, count, known[key].topic) if key in known else RoomInfo(key, count, "")
                 for key, count in self.cluster.rooms().items()]
        return sorted(infos, key=lambda info: (-info.count, name_key(info.name)))

    def who(self, member: Member) -> tuple[list[str], dict[str, str], int]:
        """The names in a member's room (in a cluster, on every node), those here who are away
        with what they said, and how many are in a room in all."""
        roommates = self.registry.roommates(member)
        away = {m.name: m.away for m in roommates if m.away}
        if self.cluster is None:
            return [m.name for m in roommates], away, len(self.registry.named())
        return self.cluster.who(member.room.name), away, sum(self.cluster.rooms().values())

    def whois(self, name: str) -> dict[str, Any]:
        """What /whois says of the person called ``name`` (see :func:`profile`), on this node or,
        in a cluster, another; CommandError if there is no one of that name."""
        member = self.registry.find(name)
        if member is not None and member.room is not None:
            return profile(member)
        found = self.cluster.person(name) if self.cluster is not None else None
        if found is None:
            raise no_such_name(name)
        return found

    def changed(self, member: Member) -> None:
        """What /whois says of ``member`` changed: in a cluster, the other nodes see it."""
        if self.cluster is not None:
            self.cluster.note(member)

    # -- delivery ---------------------------------------------------------------------------

    def publish(self, sender: Member, event: RoomEvent) -> Optional[int]:
        """Send a room event to the sender's room; return its first id (None if the sender is
        in no room).  A notice of the sender's arrival still waiting for the room's next notice
        line goes first.  See :meth:`_post`."""
        room = sender.room
        if room is not None:
            self._tell_room(room, self.notices.take_naming(room, sender.name))
        if self.cluster is not None:  # delivered when Redis hands it back, to every node alike
            sender.published = None
            if room is not None:
                sender.published = self.cluster.first_id(self.cluster.publish(room.name, event, here=True))
            return sender.published
        sender.published = self._post(event, sender.name, None if event.echo else sender,
                                      lambda post: self.registry.post(sender, post))
        return sender.published

    def _post(self, event: RoomEvent, sender: str, besides: Optional[Member],
              post_in: Callable[[Callable[[Room], None]], Optional[Room]],
              hide: frozenset[str] = frozenset()) -> Optional[int]:
        """Give a room event its ids, keep it in history and queue it for the room's fan-out in
        the same instant as the room is read (``post_in`` runs ``post`` under the registry's
        lock), so every member and the history see one order; then send it, rendered once per
        format for all.

        A kept event is droppable: a reader too slow to take it live may miss it and find it
        with /history.  Notices that are not kept are never dropped.
        """
        kept, text = self.prepared(event)
        when = self.clock.now()
        first = 0
        sender_key = name_key(sender) if sender else ""

        def post(room: Room) -> None:  # under the registry's lock: quick, no I/O
            nonlocal first
            first = self._take_ids(room, sender, kept, event.ids, when)
            self.queue(room, event, text, first, when, besides, sender_key, hide)

        room = post_in(post)
        if room is None:
            return None
        room.fanout.flush()
        return first

    def prepared(self, event: RoomEvent) -> tuple[Optional[Batch], bytes]:
        """What a room event needs before the registry's lock: its batch for history (None if
        not kept; a flood faster than the disk waits here) and its text, rendered once."""
        kept = None
        if event.kept and self.history is not None:
            self.history.wait_for_room()
            kept = Batch.of(event.kind, event.texts)
        return kept, event.render_text(self.clock.stamp())

    @staticmethod
    def queue(room: Room, event: RoomEvent, text: bytes, first: int, when: float, besides: Optional[Member],
              sender_key: str, hide: frozenset[str]) -> None:
        """Queue a room event for the room's fan-out, under the registry's lock (quick, no I/O):
        to its members now, but those in ``hide``; JSON is rendered only if someone takes it."""
        out = Out(lambda: text, lambda: event.render_json(first, room.name, when))
        members = room.members if not hide else tuple(m for m in room.members if m.name not in hide)
        room.fanout.add(Delivery(members, out, droppable=event.kept, besides=besides, sender=sender_key))

    def _take_ids(self, room: Room, sender: str, kept: Optional[Batch], count: int, when: float) -> int:
        """The first of ``count`` new ids: history's for what it keeps, the same sequence's
        otherwise (see :meth:`_reserve`), so ids increase across all events."""
        first = self.history.add(room.name, sender, kept, when) if kept is not None and self.history else None
        return self._reserve(count) if first is None else first

    def _reserve(self, count: int) -> int:
        """The first of ``count`` ids from the one sequence, for events history does not keep."""
        return self.history.reserve(count) if self.history is not None else self._ids.take(count)

    def tell_due_notices(self) -> None:
        """Tell each room the comings and goings that waited for its next notice line."""
        for room, comings in self.notices.take_due():
            self._tell_room(room, comings)

    def announce(self, text: str, bye: Optional[str] = None) -> int:
        """A server notice to every member in every room; ``bye``: the last line each gets
        (a ``bye`` event with this code in JSON), as their connections end.  Return how many
        were told."""
        members = self.registry.named()
        if bye is None:
            out = Out.line(self._notice(text), "notice", text=text)
            for member in members:
                member.say(out)
        else:
            out = Out.line(self._notice(text), "bye", code=bye, message=text)
            for member in members:
                member.end(out)
        return len(members)

    def missed_notice(self, count: int, json: bool) -> bytes:
        """What a reader too slow for its queue is told in place of the messages it lost."""
        return render_event("missed", count=count) if json else encode_line(self._notice(render_missed(count)))

    def _tell_room(self, room: Room, comings: Optional[Comings]) -> None:
        """Tell a room its comings and goings: not those who arrived, each of whom had a welcome."""
        if comings is not None and self.cluster is not None:
            self.cluster.tell_comings(room.name, comings)
        elif comings is not None:
            self._post(RoomEvent.comings(comings), "", None,
                       lambda post: room if self.registry.post_to(room, post) else None, comings.newcomers())

    def _notice(self, text: str) -> str:
        return render_notice(self.clock.stamp(), text)


class _IdSequence:
    """Event ids for a chat without history (tests): from 1, in blocks, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 1

    def take(self, count: int) -> int:
        with self._lock:
            first, self._next = self._next, self._next + count
            return first

    def peek(self) -> int:
        return self._next


def _operation_line(line: str) -> tuple[str, Optional[str]]:
    """The line a JSON client's operation stands for, and its label (see :mod:`groupchat.jsonl`):
    a message is taken literally (one starting with "/" is still a message)."""
    op = jsonl.parse_operation(line)
    text = clean_text(op.text)
    if op.op == jsonl.OP_CMD:
        return (text if text.startswith("/") else "/" + text), op.label
    if not text:
        raise BadOperationError("nothing to send", code=jsonl.USAGE, label=op.label)
    return ("/" + text if text.startswith("/") else text), op.label


def _mode_asked(line: str) -> Optional[str]:
    """The mode a ``/mode ...`` line asks for ("" if none is named), else None."""
    command = split_command(line)
    return command[1].lower() if command is not None and command[0] == "mode" else None
