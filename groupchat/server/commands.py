"""Slash commands: a table of :class:`~groupchat.protocol.CommandSpec` bound to ``cmd_NAME`` methods.

The chat's commands (:mod:`groupchat.server.chat_commands`) and the server console's
(:mod:`groupchat.server.console`) are kept this way; :meth:`CommandTable.run` is the one
place where a mistake becomes a one-line answer, so no command can drop a connection or
stop the console.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional

from groupchat.errors import CommandError, GroupchatError, UsageError
from groupchat.jsonl import INTERNAL, NOT_OP, UNKNOWN_COMMAND
from groupchat.protocol import CommandSpec, split_command

log = logging.getLogger(__name__)


class CommandTable:
    """The commands of one object: each spec's ``cmd_NAME`` method, looked up by name ignoring case.

    A spec without a method, or a ``cmd_`` method without a spec, is a programming error
    and fails at once (``TypeError``), so help, completion and the methods cannot drift.
    """

    def __init__(self, owner: Any, specs: Iterable[CommandSpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self._aliases = {alias: spec for spec in self.specs.values() for alias in spec.aliases}
        self._methods: dict[str, Callable[[Any, str], None]] = {
            attr[len("cmd_"):]: getattr(owner, attr) for attr in dir(owner) if attr.startswith("cmd_")}
        if self._methods.keys() != self.specs.keys():
            raise TypeError(f"{type(owner).__name__}: commands without a method or methods without a "
                            f"spec: {sorted(self._methods.keys() ^ self.specs.keys())}")

    def run(self, caller: Any, line: str, fail: Callable[[Any, GroupchatError], None],
            is_op: Callable[[Any], bool] = lambda caller: True) -> None:
        """Run ``/name rest``; hand any mistake to ``fail``, whose message is one line."""
        name, rest = split_command(line) or ("", "")
        try:
            spec = self.find(name)
            if spec.ops_only and not is_op(caller):
                raise CommandError(f"/{spec.name} is for operators only", code=NOT_OP)
            try:
                self._methods[spec.name](caller, rest)
            except UsageError:
                raise UsageError(f"usage: {spec.usage}") from None
        except GroupchatError as exc:  # the caller's mistake, said back in one line
            fail(caller, exc)
        except Exception:  # a bug must cost one command, never the connection or the console
            log.exception("command %r failed", line)
            fail(caller, CommandError(f"/{name} failed; the server's log says why", code=INTERNAL))

    def find(self, name: str) -> CommandSpec:
        spec = self.specs.get(name.lower()) or self._aliases.get(name.lower())
        if spec is None:
            raise CommandError(f'unknown command "/{name}"; /help lists them', code=UNKNOWN_COMMAND)
        return spec

    def help_lines(self, topic: str = "", show_ops: bool = True) -> list[str]:
        """One line per command, or the one asked about."""
        if topic:
            spec = self.find(topic.lstrip("/"))
            return [f"{spec.usage}: {spec.help}" + _also(spec)]
        return [f"{spec.usage:<24} {spec.help}" + (" (operators)" if spec.ops_only else "") + _also(spec)
                for spec in sorted(self.specs.values(), key=lambda s: s.name)
                if show_ops or not spec.ops_only]


def _also(spec: CommandSpec) -> str:
    return f" (also {', '.join('/' + alias for alias in spec.aliases)})" if spec.aliases else ""


def split_args(rest: str, at_least: int, at_most: Optional[int] = None) -> list[str]:
    """Split a command's arguments; the last one keeps its spaces.  Too few is a :class:`UsageError`.

    >>> split_args("bob hi there", 2)
    ['bob', 'hi there']
    >>> split_args("bob", 1, at_most=2)
    ['bob']
    """
    parts = rest.split(None, (at_most or at_least) - 1) if rest else []
    if len(parts) < at_least:
        raise UsageError()
    return parts
