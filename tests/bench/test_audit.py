"""`cutover bench audit` at a tiny size prints a phase with and one without the audit."""

from __future__ import annotations

from ops.bench import audit
from tests.bench.conftest import bench_args, number, table_rows


def test_audit_prints_latency_and_cpu_per_poll_beside_no_audit(capsys):
    args = bench_args(users=6, clients=2, duration=1.5, polls_per_second=40.0, sample=0.5, rounds=1)
    assert audit.main(args) == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "phase")
    assert set(rows) == {"no audit", "audit 0.5"}
    for cells in rows.values():
        polls, errors, p50, p99, cpu = (number(c) for c in cells[:5])
        assert polls > 0 and errors == 0 and p99 >= p50 > 0 and cpu > 0
    assert number(rows["no audit"][5]) == 0
    assert number(rows["audit 0.5"][5]) > 0  # polls were audited
    assert "server CPU per poll" in out
