"""Real nodes for the tests of what the gateway serves browsers (tests/e2e's fixtures)."""

from __future__ import annotations

from tests.e2e.conftest import make_server, uid

__all__ = ["make_server", "uid"]
