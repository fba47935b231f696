"""`cutover bench ...`: benchmarks that print figures (never timed assertions).

Each benchmark starts what it measures as separate processes on 127.0.0.1,
drives it for a bounded time and prints a table; where the design asks for
it, the same workload runs against a bare trio-websocket server in the same
run, as the floor of this stack.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["add_bench_arguments", "run_bench"]

BENCHMARKS = {
    "polling": "GraphQL polling: requests/s and CPU per request on one core",
    "ws": "WebSocket: memory per idle connection, targeted, batch and broadcast delivery, "
    "beside the bare trio-websocket and asyncio websockets servers",
    "publish": "publish API throughput beside the GraphQL mutation path",
    "cost": "keeping 1,000 users fresh: polling at 30 s and 5 s versus push",
    "audit": "the shadow audit's cost on the polling path: p99 and CPU per poll beside none",
}


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True)
    for name, help_text in BENCHMARKS.items():
        bench = sub.add_parser(name, help=help_text)
        bench.add_argument("--duration", type=float, default=10.0, help="seconds of load")
        bench.add_argument("--connections", type=int, default=1000)
        bench.add_argument("--rate", type=float, default=500.0, help="events/s (ws)")
        bench.add_argument("--users", type=int, default=1000)
        bench.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
        if name == "audit":
            bench.add_argument("--sample", type=float, default=0.1, help="audit_sample (0.1)")
            bench.add_argument(
                "--polls-per-second", type=float, default=100.0, help="steady load in total"
            )
            bench.add_argument("--rounds", type=int, default=2, help="phases of each kind")
        if name == "ws":
            bench.add_argument(
                "--compression",
                choices=("off", "on", "both"),
                default="off",
                help="cutover --ws-compression off, on (websockets clients offering "
                "permessage-deflate) or both phases in one run",
            )
            bench.add_argument(
                "--broadcasts",
                type=int,
                default=5,
                help="system.notice broadcasts to every connection, one a second (0: none)",
            )
            bench.add_argument(
                "--nodes",
                type=int,
                default=1,
                help="also run cutover as N worker processes on one port sharing Redis "
                "(--workers N; CUTOVER_BENCH_REDIS_URL, default the local Redis)",
            )


def run_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"ops.bench.{args.bench_command}")
    return module.main(args)
