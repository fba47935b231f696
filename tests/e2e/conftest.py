from __future__ import annotations

import itertools

import pytest

from tests.e2e.server import ServerProcess

_users = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One node shared by a test module; tests use fresh user ids to stay apart."""
    node = ServerProcess(tmp_path_factory.mktemp("node")).start()
    yield node
    node.stop()


@pytest.fixture
def make_server(tmp_path):
    """A factory of nodes with their own flags, stopped after the test."""
    nodes: list[ServerProcess] = []

    def make(*args: str, env: dict[str, str] | None = None, workdir=None) -> ServerProcess:
        node = ServerProcess(workdir or tmp_path / f"node{len(nodes)}", list(args), dict(env or {}))
        node.workdir.mkdir(parents=True, exist_ok=True)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def uid():
    """Fresh user ids: uid('alice') -> 'alice-17'."""
    serial = next(_users)
    return lambda name: f"{name}-{serial}"
