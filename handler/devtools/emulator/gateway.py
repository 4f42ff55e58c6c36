"""The API gateway's ``SDK-HMAC-SHA256`` check, as every emulated Huawei Cloud API needs it.

DWR, SMN and Cloud Eye sit behind the same gateway and authenticate the same way, so the DWR
routes (:mod:`.dwr`) and the notification routes (:mod:`.notify`) share this check. The
signature is recomputed with :class:`handler.client.dwr_signing.DwrSigner` over the headers
``SignedHeaders`` names (which must include ``host`` and ``x-sdk-date``).
"""

from __future__ import annotations

import calendar
import hmac
import re
import time
from collections.abc import Mapping

from werkzeug.wrappers import Request

from handler.client.dwr_signing import DATE_HEADER, SECURITY_TOKEN_HEADER, DwrSigner

AUTHORIZATION = re.compile(
    r"SDK-HMAC-SHA256 Access=(?P<access>[^,\s]+), SignedHeaders=(?P<signed>[^,\s]+), "
    r"Signature=(?P<signature>[0-9a-f]+)"
)


def sdk_signature_problem(
    request: Request,
    signers: Mapping[str, DwrSigner],
    *,
    now: float,
    max_skew: float,
    security_token: str | None,
) -> str | None:
    """Why a request does not authenticate with ``SDK-HMAC-SHA256``, or None when it does.

    The reasons are for the gateway's 401 message; none of them echoes a secret.
    """
    parts = AUTHORIZATION.fullmatch(request.headers.get("Authorization", "").strip())
    signed = parts["signed"].split(";") if parts else []
    if parts is None or not {"host", DATE_HEADER.lower()} <= set(signed):
        return "missing or malformed Authorization"
    signer = signers.get(parts["access"])
    if signer is None:
        return "the access key id does not exist"
    sent = sdk_timestamp(request.headers.get(DATE_HEADER, ""))
    if sent is None or abs(now - sent) > max_skew:
        return "X-Sdk-Date is missing or too far off the time"
    if any(name not in request.headers for name in signed):
        return "a signed header is missing"
    expected = signer.authorization(
        request.method,
        request.path,
        request.args.to_dict(),
        {name: request.headers[name] for name in signed},
        request.get_data(),
    )
    if not hmac.compare_digest(parts["signature"], expected.rpartition("Signature=")[2]):
        return "the signature does not match"
    token = request.headers.get(SECURITY_TOKEN_HEADER)
    if security_token and not hmac.compare_digest(token or "", security_token):
        return "the security token is missing or not valid"
    return None


def sdk_timestamp(value: str) -> float | None:
    """Seconds since the epoch from ``X-Sdk-Date`` (``YYYYMMDDTHHMMSSZ``), or None."""
    try:
        return float(calendar.timegm(time.strptime(value.strip(), "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None
