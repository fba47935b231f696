"""Markers for the suites that start real processes (and the store's stress
tests, marked `slow` where they are), so the unit run stays fast:

    pytest -m "not e2e and not bench and not slow"    # units, 22 s of CPU (35 s wall on 2 cores)
    pytest -m "not e2e and not bench"                 # units with the store's stress tests
    pytest                                            # everything (what `make test` runs)
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
E2E_DIRS = {"e2e", "parity_e2e"}
SERVER_FIXTURES = {"server", "make_server", "node", "cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).relative_to(TESTS).parts
        if parts[0] == "bench":
            item.add_marker(pytest.mark.bench)
        elif parts[0] in E2E_DIRS or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
