"""Fixtures shared by every test directory: one trustme CA per session (issuing a certificate
per instance is cheap; making a CA is not) and the loopback DNS server."""

from __future__ import annotations

import pytest
import trustme

from tests.support.dns_server import dns_server

__all__ = ["ca", "dns_server"]


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()
