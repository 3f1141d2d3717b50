"""The server's own terminal: moderation commands, and end of input (Ctrl-D) stops the server.

At a terminal the input line is prompt_toolkit's, as in the client: log lines print above it
(``patch_stdout``), so they never garble a half-typed command, and editing keys and the up
arrow's history work.  Piped input is read line by line.
"""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from groupchat.protocol import CHAT_COMMANDS, CommandSpec, name_key
from groupchat.server.chat import Chat
from groupchat.server.commands import CommandTable, split_args
from groupchat.server.moderation import SAY, parse_ban

SERVER = "the server"
BAN, UNBAN = (next(spec for spec in CHAT_COMMANDS if spec.name == name) for name in ("ban", "unban"))
CONSOLE_COMMANDS = (
    CommandSpec("help", "[COMMAND]", "list the console's commands, or explain one"),
    CommandSpec("who", "", "everyone connected, by room"),
    CommandSpec("rooms", "", "the rooms and how many are in each"),
    CommandSpec("say", "TEXT", "a notice from the server to everyone"),
    CommandSpec("kick", "NAME [REASON]", "disconnect someone"),
    CommandSpec("ban", BAN.args, BAN.help),
    CommandSpec("unban", UNBAN.args, UNBAN.help),
    CommandSpec("bans", "", "list the bans in force"),
    CommandSpec("quit", "", "stop the server (as Ctrl-D does)"),
)


class Console:
    """Reads commands typed at the server's terminal and prints their answers to ``output``."""

    def __init__(self, chat: Chat, stop: Callable[[], None], output: Optional[TextIO] = None) -> None:
        self.chat = chat
        self.stop = stop
        self.output = output
        self.commands = CommandTable(self, CONSOLE_COMMANDS)

    def run(self, console: TextIO) -> None:
        """Handle lines until end of input, then stop the server."""
        for line in console:
            self.handle(line)
        self.stop()

    def run_terminal(self, stopping: threading.Event) -> None:
        """Handle lines typed at the terminal, in the main thread (prompt_toolkit's), until Ctrl-D,
        Ctrl-C or /quit, or until ``stopping`` is set (a signal); then stop the server."""
        session: PromptSession[str] = PromptSession(history=InMemoryHistory())

        def interrupt() -> None:  # from another thread: end the prompt in its own loop
            stopping.wait()
            app = session.app
            if app.is_running:
                app.loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError()))

        threading.Thread(target=interrupt, name="console-stop", daemon=True).start()
        with patch_stdout(raw=True), _logging_to(sys.stderr):
            while not stopping.is_set():
                try:
                    self.handle(session.prompt("server> "))
                except (EOFError, KeyboardInterrupt):
                    break
        self.stop()

    def handle(self, line: str) -> None:
        """Run one typed line: at the console every line is a command, with or without "/"."""
        line = line.strip()
        if line:
            self.commands.run(None, line if line.startswith("/") else "/" + line,
                              lambda caller, exc: self._reply(caller, str(exc)))

    def _reply(self, _caller: None, text: str) -> None:
        print(text, file=self.output, flush=True)

    def _print_all(self, lines: list[str]) -> None:
        for line in lines:
            self._reply(None, line)

    def cmd_help(self, _caller: None, rest: str) -> None:
        self._print_all(self.commands.help_lines(rest) + ["Ctrl-D stops the server, as /quit does."])

    def cmd_who(self, _caller: None, rest: str) -> None:
        members = self.chat.registry.named()
        lines = [f"{m.name} in {m.room.name if m.room else '-'} from {m.address}" + (" (operator)" if m.is_op else "")
                 for m in members]
        if self.chat.cluster is not None:  # and the people on the other nodes
            here = {name_key(m.name) for m in members}
            lines += [f"{name} in {info.name} on another server" for info in self.chat.rooms()
                      for name in self.chat.cluster.who(info.name) if name_key(name) not in here]
        self._print_all(lines or ["Nobody is connected."])

    def cmd_rooms(self, _caller: None, rest: str) -> None:
        self._print_all(self.chat.describe_rooms())

    def cmd_say(self, _caller: None, rest: str) -> None:
        (text,) = split_args(rest, 1)
        notice = f"Notice from the server: {text}"
        told = self.chat.announce(notice)
        said = f"Said to {told} {'person' if told == 1 else 'people'}"
        if self.chat.cluster is not None:
            self.chat.cluster.tell_others(SAY, {"text": notice})
            said += " here, and to the people on the other servers"
        self._reply(None, said + ".")

    def cmd_kick(self, _caller: None, rest: str) -> None:
        name, *reason = split_args(rest, 1, at_most=2)
        self._reply(None, f"Kicked {self.chat.moderation.kick_name(name, SERVER, ''.join(reason))}.")

    def cmd_ban(self, _caller: None, rest: str) -> None:
        self._reply(None, self.chat.moderation.ban(parse_ban(rest), SERVER))

    def cmd_unban(self, _caller: None, rest: str) -> None:
        self._reply(None, self.chat.moderation.unban(parse_ban(rest, with_minutes=False)))

    def cmd_bans(self, _caller: None, rest: str) -> None:
        self._print_all(self.chat.moderation.describe_bans())

    def cmd_quit(self, _caller: None, rest: str) -> None:
        self.stop()


@contextmanager
def _logging_to(stream: TextIO) -> Iterator[None]:
    """Point the log's stream handlers at ``stream`` (patch_stdout's proxy) for a while."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    before = [(handler, handler.setStream(stream)) for handler in handlers]
    try:
        yield
    finally:
        for handler, old in before:
            if old is not None:  # None: it wrote there already
                handler.setStream(old)
