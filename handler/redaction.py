"""Redaction: how secrets are shown - or rather not shown - in reprs, logs and messages.

One place, so every module masks the same way: access key ids keep a short prefix (enough to
tell two keys apart on call), everything else secret is replaced entirely.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def redact(secret: str | None) -> str:
    """Show at most the first four characters of a secret-ish value."""
    if not secret:
        return ""
    return secret[:4] + "***" if len(secret) > 8 else "***"


def redact_url(url: str | None) -> str | None:
    """``scheme://user:***@host:port/path``: the password masked, the query dropped."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port is not None else "")
    if parts.username or parts.password:
        netloc = f"{parts.username or ''}{':***' if parts.password else ''}@{netloc}"
    return f"{parts.scheme}://{netloc}{parts.path}"
