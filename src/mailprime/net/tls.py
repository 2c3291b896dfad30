"""SSLContext helpers for the listeners and the outbound client: TLS 1.2 or newer only
(RFC 8996 deprecates TLS 1.0 and 1.1; RFC 7525 / BCP 195 recommends 1.2+)."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert_path: str | Path, key_path: str | Path) -> ssl.SSLContext:
    """A server context for STARTTLS (RFC 3207) and implicit TLS (RFC 8314) listeners."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Compression invites CRIME; renegotiation is a DoS lever with nothing to gain for SMTP.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def client_context(verify: bool = True, cafile: str | None = None) -> ssl.SSLContext:
    """A client context. `verify=False` is for opportunistic STARTTLS to MX hosts (RFC 7435):
    encryption without authentication beats plaintext, and MTA-STS decides when to insist."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if verify:
        if cafile:
            ctx.load_verify_locations(cafile=cafile)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
