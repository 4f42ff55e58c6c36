"""Credentials: an access key pair, optionally temporary, that both API signers take.

Kept outside :mod:`handler.client` so entry points can carry the FunctionGraph agency's keys
without importing the client (and ``requests``) before the first call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from handler.redaction import redact


@dataclass(frozen=True)
class Credentials:
    """An access key pair, optionally temporary (with a security token).

    ``repr`` shows only the start of the access key id, so credentials can sit inside
    objects that get logged without leaking.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.access_key_id or not self.secret_access_key:
            raise ValueError("access key id and secret access key are both required")

    def __repr__(self) -> str:
        token = ", temporary" if self.security_token else ""
        return f"Credentials(access_key_id={redact(self.access_key_id)!r}{token})"
