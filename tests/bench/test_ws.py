"""`cutover bench ws` at a tiny size prints its side-by-side table with numbers."""

from __future__ import annotations

from ops.bench import ws
from tests.bench.conftest import bench_args, number, table_rows


def test_ws_prints_side_by_side_figures(capsys):
    assert ws.main(bench_args(connections=10, rate=10.0, duration=1.0, broadcasts=2)) == 0
    output = capsys.readouterr().out
    rows = table_rows(output, "metric")
    assert next(iter(rows)) == "connections held"
    assert [number(c) for c in rows["connections held"][:3]] == [10, 10, 10]
    assert number(rows["events published"][1]) == 10  # the bare server's fixed count
    assert number(rows["events published"][0]) > 0
    assert number(rows["events received"][0]) == number(rows["events published"][0])
    assert number(rows["events received"][1]) == 10
    for q in ("p50", "p95", "p99"):
        cut, raw = (number(c) for c in rows[f"{q} publish-to-receive (ms)"][:2])
        assert 0 < cut < 10_000 and 0 < raw < 10_000
    number(rows["RSS per idle connection (KiB)"][0])
    number(rows["server CPU per event (ms)"][0])
    # The publish API source, batches and the broadcast, on Cutover and both floors.
    for column in range(3):
        single = "publish API single"
        assert number(rows[f"{single}: events received"][column]) > 0
        number(rows[f"{single}: server CPU per event (ms)"][column])
        assert number(rows["publish API batch of 100: events received"][column]) > 0
        assert number(rows["broadcast: receipts"][column]) == 10 * number(
            rows["broadcast: notices sent"][column]
        )
        assert number(rows["broadcast: last receipt, worst notice (ms)"][column]) > 0
    assert number(rows["poll: server CPU per request (ms)"][0]) > 0


def test_ws_compression_both_negotiates_deflate_in_the_on_phase(capsys):
    args = bench_args(connections=10, rate=10.0, duration=1.0, compression="both")
    assert ws.main(args) == 0
    output = capsys.readouterr().out
    header = next(line for line in output.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == [
        "cutover", "cutover", "deflate", "raw", "trio-websocket", "websockets", "asyncio",
        "ratio", "ratio", "deflate",
    ]  # fmt: skip
    rows = table_rows(output, "metric")
    columns = {"off": 0, "on": 1, "raw": 2, "peer": 3}

    def figure(name: str, column: str) -> float:
        return number(rows[name][columns[column]])

    for column in columns:
        assert figure("connections held", column) == 10
        figure("connections lost by the end of the run", column)
        figure("RSS per idle connection (KiB)", column)
        figure("server CPU with idle connections (%)", column)
        assert figure("time to connect all (s)", column) > 0
        assert figure("events received", column) == figure("events published", column) > 0
    # Only the websockets clients offer permessage-deflate, and the server took it.
    assert figure("compression negotiated (connections)", "on") == 10
    assert figure("compression negotiated (connections)", "off") == 0
    assert figure("compression negotiated (connections)", "raw") == 0
    assert figure("compression negotiated (connections)", "peer") == 0
    for ratio in rows["RSS per idle connection (KiB)"][4:6]:
        number(ratio)
    assert "server_no_context_takeover" in output


def test_ws_nodes_runs_the_workload_on_two_workers(capsys):
    args = bench_args(connections=10, rate=10.0, duration=1.0, broadcasts=1)
    args.nodes = 2
    assert ws.main(args) == 0
    output = capsys.readouterr().out
    rows = table_rows(output, "metric")
    header = next(line for line in output.splitlines() if line.startswith("metric"))
    assert "cutover 2 nodes" in header
    held, held_nodes = (number(c) for c in rows["connections held"][:2])
    assert held == held_nodes == 10
    received = number(rows["events received"][1])
    assert received == number(rows["events published"][1]) > 0
    assert number(rows["broadcast: receipts"][1]) == 10
    assert "--workers 2" in output
