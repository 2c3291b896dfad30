"""Fixtures shared by every test directory: one trustme CA per session (issuing a certificate
per instance is cheap; making a CA is not) and the loopback DNS server."""

from __future__ import annotations

import os

import pytest
import trustme
from hypothesis import settings

from tests.support.dns_server import dns_server

__all__ = ["ca", "dns_server"]

# CI runs the fuzzers derandomized, so a green main stays green; set HYPOTHESIS_PROFILE=explore
# locally to search with fresh random examples (and more of them).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()
