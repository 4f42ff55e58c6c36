"""A throwaway certificate for the loopback emulators, so the benchmarks can speak HTTPS.

Real OBS and DWR endpoints are HTTPS only: a benchmark over plain HTTP leaves out what every
real call pays (the handshake, and encryption of every byte). The certificate is self-signed
for ``127.0.0.1`` (made with ``openssl``, as ``tests/client/test_tls.py`` does), lives in the
run's temporary directory, and every client is given it as its CA: all of them verify it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

OPENSSL_TIMEOUT = 60.0


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """``(certificate, key)`` PEM files for ``127.0.0.1``, valid for a day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is needed to make the benchmark's TLS certificate")
    cert, key = directory / "bench-cert.pem", directory / "bench-key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=OPENSSL_TIMEOUT,
    )  # fmt: skip
    return cert, key


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context
