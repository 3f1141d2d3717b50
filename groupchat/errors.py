"""Every error groupchat raises on purpose; each message is one line a person can act on."""

from typing import Optional


class GroupchatError(Exception):
    """Base class: the CLI prints the message as one line on stderr and exits non-zero.

    ``code`` is the stable string a JSON client gets with the message (see groupchat.jsonl);
    a subclass sets its own, and one raise may give another.
    """

    code = "COMMAND_FAILED"

    def __init__(self, *args: object, code: Optional[str] = None) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code


class InvalidNameError(GroupchatError):
    """Raised when a name breaks the naming rules; the message says which rule."""

    code = "NAME_INVALID"


class NameTakenError(GroupchatError):
    """Raised when someone connected already has the name, ignoring case."""

    code = "NAME_TAKEN"


class ServerStartError(GroupchatError):
    """Raised when the server cannot listen: port in use, permission denied, unknown address."""


class ConnectError(GroupchatError):
    """Raised when the client cannot reach the server: refused, unknown host, unreachable."""


class ConnectionLostError(GroupchatError):
    """Raised when the server closes the connection or it breaks while the client runs."""


class NameRefusedError(GroupchatError):
    """Raised when the server refuses the client's name and there is no person to ask for another."""


class CommandError(GroupchatError):
    """Raised by a chat or console command for a mistake in how it was used; the message is the reply."""


class InvalidAddressError(GroupchatError):
    """Raised for text that should be an IP address or CIDR block (bans, --allow, --deny) and is not."""


class NoNewlineError(GroupchatError):
    """Raised when a peer streams bytes past the limit with no newline: it is cut off."""


class HistoryError(GroupchatError):
    """Raised when the history database cannot be opened, read or written; the message says which file and what to do."""


class BenchError(GroupchatError):
    """Raised when a benchmark cannot run: a server that does not start, a worker that dies."""


class UsageError(CommandError):
    """Raised by a command given too few arguments, or bad ones; the reply is the command's usage."""

    code = "USAGE"


class BadOperationError(GroupchatError):
    """Raised for a JSON client's line that is not a valid operation; carries the op's label, if any."""

    def __init__(self, message: str, code: str, label: Optional[str] = None) -> None:
        super().__init__(message, code=code)
        self.label = label


class ClusterError(GroupchatError):
    """Raised when the Redis that links a cluster's nodes cannot be used: the redis extra is missing,
    or Redis is unreachable, refuses the password or is full; Redis is named by its URL without
    the password."""

    code = "CLUSTER"


class NotSentError(ClusterError):
    """Raised for one event that could not be published to the cluster (Redis away for too long, or
    too many waiting): its sender is told, it is never dropped in silence."""

    code = "NOT_SENT"
