"""The server's own terminal: moderation commands, and end of input (Ctrl-D) stops the server."""

from __future__ import annotations

from typing import Callable, Optional, TextIO

from groupchat.server.chat import Chat
from groupchat.server.commands import CommandTable, command, split_args

SERVER = "the server"


class Console:
    """Reads commands typed at the server's terminal and prints their answers to ``output``."""

    def __init__(self, chat: Chat, stop: Callable[[], None], output: Optional[TextIO] = None) -> None:
        self.chat = chat
        self.stop = stop
        self.output = output
        self.commands = CommandTable(self)

    def run(self, console: TextIO) -> None:
        """Handle lines until end of input, then stop the server."""
        for line in console:
            line = line.strip()
            if not line:
                continue
            if not line.startswith("/"):
                line = "/" + line  # at the console every line is a command
            self.commands.run(None, line, self._reply)
        self.stop()

    def _reply(self, _caller: None, text: str) -> None:
        print(text, file=self.output, flush=True)

    def _print_all(self, lines: list[str]) -> None:
        for line in lines:
            self._reply(None, line)

    @command("[COMMAND]", "list the console's commands, or explain one")
    def cmd_help(self, _caller: None, rest: str) -> None:
        self._print_all(self.commands.help_lines(rest) + ["Ctrl-D stops the server, as /quit does."])

    @command("", "everyone connected, by room")
    def cmd_who(self, _caller: None, rest: str) -> None:
        members = self.chat.registry.named()
        self._print_all([f"{m.name} in {m.room.name if m.room else '-'} from {m.address}"
                         + (" (operator)" if m.is_op else "") for m in members]
                        or ["Nobody is connected."])

    @command("", "the rooms and how many are in each")
    def cmd_rooms(self, _caller: None, rest: str) -> None:
        self._print_all(self.chat.describe_rooms())

    @command("TEXT", "a notice from the server to everyone")
    def cmd_say(self, _caller: None, rest: str) -> None:
        (text,) = split_args(rest, 1, self.cmd_say)
        self.chat.announce(f"Notice from the server: {text}")

    @command("NAME [REASON]", "disconnect someone")
    def cmd_kick(self, _caller: None, rest: str) -> None:
        name, *reason = split_args(rest, 1, self.cmd_kick, at_most=2)
        target = self.chat.find(name)
        self.chat.kick(target, SERVER, "".join(reason))
        self._reply(None, f"Kicked {target.name}.")

    @command("NAME|ADDRESS [MINUTES]", "refuse an address, for good if no minutes")
    def cmd_ban(self, _caller: None, rest: str) -> None:
        target, *minutes = split_args(rest, 1, self.cmd_ban, at_most=2)
        self._reply(None, self.chat.ban(target, "".join(minutes), SERVER))

    @command("ADDRESS", "lift a ban")
    def cmd_unban(self, _caller: None, rest: str) -> None:
        (target,) = split_args(rest, 1, self.cmd_unban)
        self._reply(None, self.chat.unban(target))

    @command("", "list the bans in force")
    def cmd_bans(self, _caller: None, rest: str) -> None:
        self._print_all(self.chat.describe_bans())

    @command("", "stop the server (as Ctrl-D does)")
    def cmd_quit(self, _caller: None, rest: str) -> None:
        self.stop()
