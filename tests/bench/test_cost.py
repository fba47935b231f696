"""`cutover bench cost` at a tiny size prints a row per mode with numbers."""

from __future__ import annotations

from ops.bench import cost
from tests.bench.conftest import bench_args, number, table_rows


def test_cost_prints_cpu_and_bytes_per_mode(capsys):
    assert cost.main(bench_args(users=20, clients=2, duration=3.0)) == 0
    rows = table_rows(capsys.readouterr().out, "mode")
    assert list(rows) == [
        "changes only (no readers)",
        "poll every 30 s",
        "poll every 5 s",
        "push (WebSocket)",
    ]
    cpu = {name: number(cells[0]) for name, cells in rows.items()}
    mb = {name: number(cells[2]) for name, cells in rows.items()}
    reads = {name: number(cells[3]) for name, cells in rows.items()}
    assert all(value > 0 for value in cpu.values())
    assert mb["changes only (no readers)"] == 0
    assert reads["poll every 5 s"] > reads["poll every 30 s"] > 0
    assert mb["poll every 5 s"] > mb["poll every 30 s"] > 0
    assert mb["push (WebSocket)"] > 0
    assert all(number(cells[4]) == 0 for cells in rows.values())  # no errors
