"""Redaction: how secrets are shown - or rather not shown - in reprs, logs and messages.

One place, so every module masks the same way: access key ids keep a short prefix (enough to
tell two keys apart on call), everything else secret is replaced entirely; a URL keeps its
scheme, user name, host, port and path, never its password or query, also where an error
message quotes it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

_QUERY_IN_TEXT = re.compile(r"\?[^\s'\"()<>]+")
_USERINFO_IN_TEXT = re.compile(r"(//[^\s/@:'\"]*):[^\s/@'\"]*@")


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


def redact_url_in(text: str, url: str | None) -> str:
    """``text`` - an error message about a call to ``url`` - without the URL's secrets.

    HTTP libraries quote the URL they were given in their errors (``Max retries exceeded with
    url: /hook?sig=…``), and a sink or webhook URL carries its credentials in the query or the
    userinfo. So the URL itself is replaced by :func:`redact_url`, its password, query and
    fragment wherever they appear (as given or percent-decoded), and - since a library may
    re-quote the URL - any query and any ``//user:password@`` left in the text are masked too.
    """
    if not url or not text:
        return text
    parts = urlsplit(url)
    text = text.replace(url, redact_url(url) or "")
    for secret in (parts.query, parts.fragment, parts.password):
        for spelling in {secret, unquote(secret or "")}:
            if spelling:
                text = text.replace(spelling, "***")
    if parts.query:
        text = _QUERY_IN_TEXT.sub("?***", text)
    return _USERINFO_IN_TEXT.sub(r"\1:***@", text)
