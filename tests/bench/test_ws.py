"""`cutover bench ws` at a tiny size prints its side-by-side table with numbers."""

from __future__ import annotations

from ops.bench import ws
from tests.bench.conftest import bench_args, number, table_rows


def test_ws_prints_side_by_side_figures(capsys):
    assert ws.main(bench_args(connections=10, rate=10.0, duration=1.0)) == 0
    output = capsys.readouterr().out
    rows = table_rows(output, "metric")
    assert next(iter(rows)) == "connections held"
    assert [number(c) for c in rows["connections held"][:2]] == [10, 10]
    assert number(rows["events published"][1]) == 10  # the bare server's fixed count
    assert number(rows["events published"][0]) > 0
    assert number(rows["events received"][0]) == number(rows["events published"][0])
    assert number(rows["events received"][1]) == 10
    for q in ("p50", "p95", "p99"):
        cut, raw = (number(c) for c in rows[f"{q} publish-to-receive (ms)"][:2])
        assert 0 < cut < 10_000 and 0 < raw < 10_000
    number(rows["RSS per idle connection (KiB)"][0])
    number(rows["server CPU per event (ms)"][0])
