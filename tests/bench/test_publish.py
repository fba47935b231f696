"""`cutover bench publish` at a tiny size: every accepted event is counted and delivered."""

from __future__ import annotations

import re

from ops.bench import publish
from tests.bench.conftest import bench_args

ROW = re.compile(
    r"^(?P<name>.+?)\s{2,}(?P<rate>[0-9.]+)\s{2,}.+?\s{2,}(?P<count>\d+)\s+(?P<errors>\d+)$"
)


def test_publish_counts_what_it_sends_and_what_arrives(capsys):
    assert publish.main(bench_args(users=4, clients=4, duration=2.0)) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        match = ROW.match(line)
        if match:
            rows[match["name"]] = (float(match["rate"]), int(match["count"]), int(match["errors"]))
    single = rows["publish API, single"]
    batch = rows["publish API, batch of 100"]
    assert single[1] > 0 and batch[1] > 0 and single[2] == batch[2] == 0
    assert rows["GraphQL createNotification"][1] > 0
    # Concurrent client loops must not lose counts: each accepted event arrives once.
    assert rows["delivered over WebSocket (single, 4 clients)"][1] == single[1]
    assert rows["delivered over WebSocket (batch of 100, 4 clients)"][1] == batch[1]
