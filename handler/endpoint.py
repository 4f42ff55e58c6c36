"""The OBS endpoint a client talks to, in one canonical form.

Kept apart from the client so settings can validate an endpoint without importing ``requests``
(the FunctionGraph entry point imports settings at start-up, where every millisecond counts).
"""

from __future__ import annotations

from urllib.parse import urlsplit


def normalise_endpoint(server: str) -> str:
    """``https://host[:port]`` from a URL or bare host; reject anything else early."""
    server = (server or "").strip().rstrip("/")
    if not server:
        raise ValueError(
            "server endpoint is required, e.g. https://obs.cn-north-4.myhuaweicloud.com"
        )
    if "://" not in server:
        server = "https://" + server
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"server endpoint must be an http(s) URL, got {parts.scheme!r} scheme")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("server endpoint must be scheme://host[:port] with no path, query or user")
    return f"{parts.scheme}://{parts.netloc}"
