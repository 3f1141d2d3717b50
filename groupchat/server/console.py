"""The server's own terminal: moderation commands, and end of input (Ctrl-D) stops the server."""

from __future__ import annotations

from typing import Callable, Optional, TextIO

from groupchat.protocol import CHAT_COMMANDS, CommandSpec
from groupchat.server.chat import Chat
from groupchat.server.commands import CommandTable, split_args
from groupchat.server.moderation import parse_ban

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
            line = line.strip()
            if not line:
                continue
            if not line.startswith("/"):
                line = "/" + line  # at the console every line is a command
            self.commands.run(None, line, lambda caller, exc: self._reply(caller, str(exc)))
        self.stop()

    def _reply(self, _caller: None, text: str) -> None:
        print(text, file=self.output, flush=True)

    def _print_all(self, lines: list[str]) -> None:
        for line in lines:
            self._reply(None, line)

    def cmd_help(self, _caller: None, rest: str) -> None:
        self._print_all(self.commands.help_lines(rest) + ["Ctrl-D stops the server, as /quit does."])

    def cmd_who(self, _caller: None, rest: str) -> None:
        members = self.chat.registry.named()
        self._print_all([f"{m.name} in {m.room.name if m.room else '-'} from {m.address}"
                         + (" (operator)" if m.is_op else "") for m in members]
                        or ["Nobody is connected."])

    def cmd_rooms(self, _caller: None, rest: str) -> None:
        self._print_all(self.chat.describe_rooms())

    def cmd_say(self, _caller: None, rest: str) -> None:
        (text,) = split_args(rest, 1)
        self.chat.announce(f"Notice from the server: {text}")

    def cmd_kick(self, _caller: None, rest: str) -> None:
        name, *reason = split_args(rest, 1, at_most=2)
        target = self.chat.find(name)
        self.chat.moderation.kick(target, SERVER, "".join(reason))
        self._reply(None, f"Kicked {target.name}.")

    def cmd_ban(self, _caller: None, rest: str) -> None:
        self._reply(None, self.chat.moderation.ban(parse_ban(rest), SERVER))

    def cmd_unban(self, _caller: None, rest: str) -> None:
        self._reply(None, self.chat.moderation.unban(parse_ban(rest, with_minutes=False)))

    def cmd_bans(self, _caller: None, rest: str) -> None:
        self._print_all(self.chat.moderation.describe_bans())

    def cmd_quit(self, _caller: None, rest: str) -> None:
        self.stop()
