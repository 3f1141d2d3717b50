"""TLS settings for both ends: TLS 1.2 or newer, certificates verified by default."""

from __future__ import annotations

import ssl
from typing import Optional

from groupchat.errors import ConnectError, ServerStartError


def server_context(certfile: str, keyfile: Optional[str] = None) -> ssl.SSLContext:
    """The server's context, or :class:`ServerStartError` saying which file is wrong and how."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise ServerStartError(f"cannot read {exc.filename or certfile}: no such file") from exc
    except PermissionError as exc:
        raise ServerStartError(f"cannot read {exc.filename or certfile}: permission denied") from exc
    except (ssl.SSLError, OSError) as exc:
        raise ServerStartError(f"cannot use certificate {certfile} with key {keyfile or certfile}: "
                               f"{describe_tls_error(exc)}") from exc
    return context


def client_context(cafile: Optional[str] = None, insecure: bool = False) -> ssl.SSLContext:
    """The client's context: verifies the server against the system's CAs or ``cafile``."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConnectError(f"cannot use CA file {cafile}: {describe_tls_error(exc)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:  # the person asked for it by name: --insecure
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_tls_error(exc: BaseException) -> str:
    """The reason OpenSSL gave, without its library codes."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verify failed"
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).replace("_", " ").lower()
    return getattr(exc, "strerror", None) or str(exc)
