"""DWR v3 request signing (``SDK-HMAC-SHA256``), kept apart from transport so it can be checked
on its own - against the reference vectors and, byte for byte, against the official SDK.

    CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n
                       SignedHeaders \\n hex(sha256(body))
    StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
    Authorization    = SDK-HMAC-SHA256 Access=AK, SignedHeaders=h1;h2, Signature=hex(HMAC(SK, ..))

The service checks whichever header set ``SignedHeaders`` names, so the caller decides what to
sign; ``host`` and ``x-sdk-date`` are mandatory because the signature is worthless without them
(replayable on another host, or forever).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote

from handler.credentials import Credentials

__all__ = [
    "ALGORITHM",
    "DATE_HEADER",
    "EMPTY_BODY_SHA256",
    "SECURITY_TOKEN_HEADER",
    "DwrSigner",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "sdk_date",
    "string_to_sign",
]

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
SECURITY_TOKEN_HEADER = "X-Security-Token"  # noqa: S105 - a header name
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_REQUIRED_SIGNED = ("host", DATE_HEADER.lower())


def sdk_date(timestamp: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC, the form ``X-Sdk-Date`` and the StringToSign carry."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(timestamp))


def _encode(text: str) -> str:
    # RFC 3986 unreserved characters stay, everything else is percent-encoded - including "/"
    # inside a value, which the SDK's quote(safe="~") also encodes.
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Each path segment percent-encoded, always ending with ``/`` (the request line need not).

    The path is decoded first and then re-encoded, as the SDK does, so ``%7E`` and ``~`` sign
    alike and an already-encoded path is not encoded twice.
    """
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(params: Mapping[str, str]) -> str:
    """Parameters sorted by name, names and values percent-encoded, joined with ``&``.

    The same string is the request line's query, so what is signed is exactly what is sent.
    """
    pairs = sorted((str(name), str(value)) for name, value in params.items())
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in pairs)


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """``(CanonicalHeaders, SignedHeaders)`` for exactly the given headers.

    Names are lower-cased and sorted, values trimmed at both ends (not collapsed inside).
    """
    lowered = {name.lower(): str(value).strip() for name, value in headers.items()}
    names = sorted(lowered)
    return "".join(f"{name}:{lowered[name]}\n" for name in names), ";".join(names)


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes = b"",
) -> str:
    """The CanonicalRequest of one request; ``headers`` are the headers to sign."""
    header_block, signed = canonical_headers(headers)
    body_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256
    return (
        f"{method.upper()}\n{canonical_uri(path)}\n{canonical_query(query)}\n"
        f"{header_block}\n{signed}\n{body_hash}"
    )


def string_to_sign(date: str, canonical: str) -> str:
    """The StringToSign for a CanonicalRequest signed at ``date`` (``X-Sdk-Date`` form)."""
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{date}\n{digest}"


class DwrSigner:
    """Signs DWR requests for one set of credentials.

    The HMAC-SHA256 key schedule and the ``Authorization`` prefix are computed once: signing is
    on every attempt of every call, and copying a keyed MAC is cheaper than re-keying it.
    """

    __slots__ = ("_access_prefix", "_credentials", "_keyed_mac")

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._keyed_mac = hmac.new(credentials.secret_access_key.encode(), digestmod=hashlib.sha256)
        self._access_prefix = f"{ALGORITHM} Access={credentials.access_key_id}, SignedHeaders="

    def __repr__(self) -> str:
        return f"DwrSigner({self._credentials!r})"

    def signature(self, text: str) -> str:
        """Hex HMAC-SHA256 of a StringToSign under the secret key."""
        mac = self._keyed_mac.copy()
        mac.update(text.encode())
        return mac.hexdigest()

    def authorization(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes = b"",
    ) -> str:
        """The ``Authorization`` value for a request whose signed headers are ``headers``.

        ``headers`` must hold ``Host`` and ``X-Sdk-Date`` (any case); the date is read from
        them, so the signature always matches the date that is sent.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        missing = [name for name in _REQUIRED_SIGNED if name not in lowered]
        if missing:
            raise ValueError(f"headers to sign must include {', '.join(missing)}")
        canonical = canonical_request(method, path, query, headers, body)
        text = string_to_sign(str(lowered[DATE_HEADER.lower()]).strip(), canonical)
        _, signed = canonical_headers(headers)
        return f"{self._access_prefix}{signed}, Signature={self.signature(text)}"

    def sign(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes = b"",
    ) -> dict[str, str]:
        """The headers to add so the request authenticates: ``Authorization`` and, for
        temporary credentials, ``X-Security-Token`` (which is signed too)."""
        added = {}
        if self._credentials.security_token:
            added[SECURITY_TOKEN_HEADER] = self._credentials.security_token
        added["Authorization"] = self.authorization(method, path, query, {**headers, **added}, body)
        return added
