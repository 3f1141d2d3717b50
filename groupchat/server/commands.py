"""Slash commands: methods named ``cmd_NAME`` gathered once into a table, with help made from them.

Both the chat (:mod:`groupchat.server.chat`) and the server console (:mod:`groupchat.server.console`) keep
their commands this way; :meth:`CommandTable.run` is the one place where a mistake becomes
a one-line answer, so no command can drop a connection or stop the console.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from groupchat.errors import CommandError, GroupchatError
from groupchat.protocol import split_command

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    """One command: how it is used, a line of help, and whether only operators may use it."""

    name: str
    args: str
    help: str
    ops_only: bool
    method: Callable[..., None]

    @property
    def usage(self) -> str:
        return f"/{self.name} {self.args}".rstrip()


def command(args: str = "", help: str = "", ops_only: bool = False) -> Callable:
    """Mark a ``cmd_NAME(self, caller, rest)`` method with its usage and help line."""

    def mark(method: Callable) -> Callable:
        method.command_info = (args, help, ops_only)
        return method

    return mark


class CommandTable:
    """The commands of one object, looked up by name, ignoring case."""

    def __init__(self, owner: Any) -> None:
        self.commands: dict[str, Command] = {}
        for attr in dir(owner):
            method = getattr(owner, attr)
            if attr.startswith("cmd_") and hasattr(method, "command_info"):
                name = attr[len("cmd_"):]
                self.commands[name] = Command(name, *method.command_info, method)

    def run(self, caller: Any, line: str, reply: Callable[[Any, str], None],
            is_op: Callable[[Any], bool] = lambda caller: True) -> None:
        """Run ``/name rest``; answer any mistake with one line through ``reply``."""
        name, rest = split_command(line) or ("", "")
        try:
            cmd = self.find(name)
            if cmd.ops_only and not is_op(caller):
                raise CommandError(f"/{cmd.name} is for operators only")
            cmd.method(caller, rest)
        except GroupchatError as exc:  # the caller's mistake, said back in one line
            reply(caller, str(exc))
        except Exception:  # a bug must cost one command, never the connection or the console
            log.exception("command %r failed", line)
            reply(caller, f"/{name} failed; the server's log says why")

    def find(self, name: str) -> Command:
        cmd = self.commands.get(name.lower())
        if cmd is None:
            raise CommandError(f'unknown command "/{name}"; /help lists them')
        return cmd

    def help_lines(self, topic: str = "", show_ops: bool = True) -> list[str]:
        """One line per command, or the one asked about."""
        if topic:
            cmd = self.find(topic.lstrip("/"))
            return [f"{cmd.usage}: {cmd.help}"]
        return [f"{cmd.usage:<24} {cmd.help}" + (" (operators)" if cmd.ops_only else "")
                for cmd in sorted(self.commands.values(), key=lambda c: c.name)
                if show_ops or not cmd.ops_only]


def usage_error(method: Callable) -> CommandError:
    """The error for bad arguments: the command's usage."""
    name = method.__name__[len("cmd_"):]
    return CommandError(f"usage: /{name} {method.command_info[0]}".rstrip())


def split_args(rest: str, at_least: int, method: Callable, at_most: Optional[int] = None) -> list[str]:
    """Split a command's arguments; the last one keeps its spaces. Too few gets the usage."""
    parts = rest.split(None, (at_most or at_least) - 1) if rest else []
    if len(parts) < at_least:
        raise usage_error(method)
    return parts
