"""`cutover bench polling` at a tiny size prints its table with numbers."""

from __future__ import annotations

from ops.bench import polling
from tests.bench.conftest import bench_args, number, table_rows


def test_polling_prints_rate_and_cpu_per_request(capsys):
    assert polling.main(bench_args(users=6, clients=2, duration=1.0)) == 0
    rows = table_rows(capsys.readouterr().out, "metric")
    assert number(rows["requests answered"][0]) > 0
    assert number(rows["errors"][0]) == 0
    assert number(rows["requests/s"][0]) > 0
    assert number(rows["server CPU per request (ms)"][0]) > 0
    assert number(rows["response body (bytes/request)"][0]) > 50
    assert number(rows["p99 latency (ms)"][0]) >= number(rows["p50 latency (ms)"][0])
