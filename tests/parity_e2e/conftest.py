"""Parity runs against real `cutover serve` processes, shared per module."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from parity.cli import add_parity_arguments, run_parity_command
from tests.e2e.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ROLLOUT = ROOT / "rollout" / "example.toml"
WINDOW = 2.0  # the poll interval plus a slow round trip on a busy 2-core machine
POLL_INTERVAL = 0.2
# The domains the example rollout moves (the others stay OFF there).
GATED = "notification,chat,follow,event"


@attrs.frozen
class ParityRun:
    """One `cutover parity run` made against its own server."""

    out: Path
    exit_code: int
    server_log: str


def parity(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cutover parity")
    add_parity_arguments(parser)
    return run_parity_command(parser.parse_args(list(argv)))


def gate(reports: Path, flags: Path = EXAMPLE_ROLLOUT) -> tuple[int, str]:
    from parity.gate import run_gate

    out = io.StringIO()
    code = run_gate(flags, reports, "1h", out=out)
    return code, out.getvalue()


def parity_run(
    workdir: Path,
    out: Path,
    *,
    faults: str | None = None,
    users: int = 8,
    duration: float = 10.0,
    seed: int = 1,
    extra: tuple[str, ...] = (),
    domains: str = GATED,
) -> ParityRun:
    """Start a server under the example rollout (with faults, if any), run a
    driven parity run against it, stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": str(ROOT), "CUTOVER_FLAGS": str(EXAMPLE_ROLLOUT)}
    args = []
    if faults:
        env["CUTOVER_FAULTS"] = faults
        args.append("--allow-faults")
    server = ServerProcess(workdir, args=args, env=env).start()
    try:
        code = parity(
            "run",
            "--url", server.url,
            "--secret", server.secret,
            "--users", str(users),
            "--duration", str(duration),
            "--drive",
            "--seed", str(seed),
            "--window", str(WINDOW),
            "--poll-interval", str(POLL_INTERVAL),
            "--flags", str(EXAMPLE_ROLLOUT),
            "--out", str(out),
            "--domains", domains,
            "--no-progress",
            *extra,
        )  # fmt: skip
    finally:
        server.stop()
    return ParityRun(out, code, server.output())


@pytest.fixture(scope="module")
def reports_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parity")


@contextlib.contextmanager
def busy_machine(processes: int = 1) -> Iterator[None]:
    """Other processes spinning on the CPU for as long as the block runs."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
