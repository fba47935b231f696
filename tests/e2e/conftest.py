from __future__ import annotations

import itertools

import attrs
import pytest

from tests.chaos.cluster import Cluster
from tests.e2e.server import ServerProcess

_users = itertools.count(1)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets `ALSO_ON_A_CLUSTER = True` runs its `server` tests twice:
    on one SQLite node, and on two PostgreSQL + Redis nodes behind nginx."""
    if "server" in metafunc.fixturenames:
        kinds = (
            ["node", "cluster"]
            if getattr(metafunc.module, "ALSO_ON_A_CLUSTER", False)
            else ["node"]
        )
        metafunc.parametrize("server", kinds, indirect=True, scope="module")


@attrs.frozen
class ClusterServer:
    """Two nodes behind nginx, seen as one server (`url`, `ws_url`, `token`)."""

    cluster: Cluster

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def ws_url(self) -> str:
        return self.cluster.ws_url

    def token(self, user: str, **kwargs) -> str:
        return self.cluster.token(user, **kwargs)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One node (or, where asked, a two-node cluster) shared by a test module;
    tests use fresh user ids to stay apart."""
    if getattr(request, "param", "node") == "cluster":
        cluster = Cluster(tmp_path_factory.mktemp("cluster"), size=2).start()
        yield ClusterServer(cluster)
        cluster.stop()
        return
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
