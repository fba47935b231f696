"""`cutover parity run | gate | report`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from parity.model import DOMAINS

__all__ = ["add_parity_arguments", "run_parity_command"]


def add_parity_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="parity_command", required=True)

    run = sub.add_parser("run", help="observe both paths for N users and write reports")
    run.add_argument(
        "--url", required=True, help="the gateway's base URL, e.g. http://127.0.0.1:8080"
    )
    who = run.add_mutually_exclusive_group(required=True)
    who.add_argument("--secret", help="HS256 secret to mint the observed users' tokens")
    who.add_argument("--token-file", help="a file of 'user token' lines, one per observed user")
    run.add_argument("--users", type=int, default=10)
    run.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds (with --until-decided: the least the run lasts)",
    )
    run.add_argument(
        "--until-decided",
        action="store_true",
        help="go on until every domain has the comparisons its verdict needs (PASS or FAIL "
        "at the threshold) or --max-duration passes (then INCONCLUSIVE, with the count); "
        "always on for --calibrate",
    )
    run.add_argument(
        "--max-duration",
        type=float,
        default=900.0,
        help="the time cap of an --until-decided run, seconds (900)",
    )
    run.add_argument("--domains", default=",".join(DOMAINS))
    run.add_argument("--drive", action="store_true", help="drive a seeded scenario of mutations")
    run.add_argument("--calibrate", action="store_true", help="A/A run: two pollers")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument(
        "--rate",
        type=float,
        default=None,
        help="driver mutations per second (default 2.5 per user)",
    )
    run.add_argument("--window", type=float, default=None, help="convergence window W, seconds")
    run.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="override the stage's poll interval (seconds)",
    )
    run.add_argument("--flags", help="the rollout file the run is made under (for its hash)")
    run.add_argument("--out", required=True)
    run.add_argument("--calibration", help="a directory of A/A calibration reports (noise floor)")
    run.add_argument("--no-progress", action="store_true")

    gate = sub.add_parser("gate", help="exit 0/1/2: may the rollout file's stages stand?")
    gate.add_argument("--flags", required=True)
    gate.add_argument("--reports", help="a directory of harness reports")
    _live_arguments(gate)
    gate.add_argument("--max-age", default="7d", help="the oldest a report may be (7d)")

    report = sub.add_parser("report", help="print the table a release engineer reads")
    report.add_argument("reports", nargs="?", help="a directory of harness reports")
    _live_arguments(report)


def _live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--live",
        action="store_true",
        help="the evidence of real traffic kept in the store (the audit and the beacons)",
    )
    parser.add_argument("--store", help="the store URL of the live evidence [CUTOVER_STORE]")
    parser.add_argument("--since", default="24h", help="the live evidence's window (24h)")


def _store_url(args: argparse.Namespace) -> str | None:
    if not getattr(args, "live", False):
        return None
    url = args.store or os.environ.get("CUTOVER_STORE")
    if not url:
        raise SystemExit("--live needs --store URL (or CUTOVER_STORE)")
    return str(url)


def run_parity_command(args: argparse.Namespace) -> int:
    if args.parity_command == "gate":
        from parity.gate import run_gate

        return run_gate(
            Path(args.flags),
            Path(args.reports) if args.reports else None,
            args.max_age,
            store_url=_store_url(args),
            live_window=args.since,
        )
    if args.parity_command == "report":
        from parity.gate import run_live_report, run_report

        store_url = _store_url(args)
        if store_url is not None:
            code = run_live_report(store_url, args.since)
            if args.reports:
                print()
                code = max(code, run_report(Path(args.reports)))
            return code
        if not args.reports:
            raise SystemExit("give a reports directory, --live --store URL, or both")
        return run_report(Path(args.reports))
    from parity.run import run_from_args

    return run_from_args(args)
