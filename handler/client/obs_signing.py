"""OBS V2 request signing, kept apart from transport so it can be checked on its own.

    Authorization: OBS <AK>:Base64(HMAC-SHA1(SK, StringToSign))
    StringToSign = VERB \\n Content-MD5 \\n Content-Type \\n Date \\n
                   CanonicalizedHeaders CanonicalizedResource

CanonicalizedHeaders are the ``x-obs-*`` headers, lower-cased, sorted, one ``name:value\\n``
each; CanonicalizedResource is the path as sent plus the signed sub-resources of the query.
The tests hold this module to the official SDK's output byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from email.utils import formatdate

from handler.credentials import Credentials

__all__ = ["SECURITY_TOKEN_HEADER", "Credentials", "Signer", "http_date", "string_to_sign"]

SECURITY_TOKEN_HEADER = "x-obs-security-token"  # noqa: S105 - a header name


def http_date(timestamp: float | None = None) -> str:
    """RFC 1123 date in GMT, as the ``Date`` header and the signature need it."""
    return formatdate(timestamp, usegmt=True)


def string_to_sign(
    method: str,
    resource: str,
    date: str,
    content_type: str = "",
    content_md5: str = "",
    obs_headers: Mapping[str, str] | None = None,
) -> str:
    """Build the V2 StringToSign; ``resource`` is path plus signed query, e.g. ``/p?k=v``."""
    canonical_headers = "".join(
        f"{name}:{value}\n"
        for name, value in sorted((k.lower(), v) for k, v in (obs_headers or {}).items())
        if name.startswith("x-obs-")
    )
    return f"{method}\n{content_md5}\n{content_type}\n{date}\n{canonical_headers}{resource}"


class Signer:
    """Signs requests for one set of credentials.

    The HMAC key schedule is computed once and copied per request: signing is on the
    per-restore hot path and the copy is cheaper than re-keying.
    """

    __slots__ = ("_credentials", "_keyed_mac")

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._keyed_mac = hmac.new(credentials.secret_access_key.encode(), digestmod=hashlib.sha1)

    def __repr__(self) -> str:
        return f"Signer({self._credentials!r})"

    def signature(self, text: str) -> str:
        mac = self._keyed_mac.copy()
        mac.update(text.encode())
        return base64.b64encode(mac.digest()).decode()

    def sign(self, method: str, resource: str, date: str, content_type: str) -> dict[str, str]:
        """Return the headers that authenticate one request sent at ``date``."""
        headers = {}
        if self._credentials.security_token:
            headers[SECURITY_TOKEN_HEADER] = self._credentials.security_token
        text = string_to_sign(method, resource, date, content_type, obs_headers=headers)
        headers["Authorization"] = f"OBS {self._credentials.access_key_id}:{self.signature(text)}"
        return headers
