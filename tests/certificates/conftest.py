"""Fixtures for issuance live in tests/support/acme.py (shared with distribution's tests)."""

from tests.support.acme import wait_for_state

__all__ = ["wait_for_state"]
