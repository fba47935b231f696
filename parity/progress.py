"""`cutover rollout advance | back`: move a domain along the rollout file's schedule.

The `[schedule]` of the rollout file lists the steps a domain goes through
(for example SHADOW 100 -> LIVE 1 -> 5 -> 25 -> 100 -> RAMPDOWN -> COMPLETE),
each with a soak time. `advance DOMAIN` moves the domain one step forward,
only when the gate passes for it at its current step: on evidence gathered
since the step began (the domain's `since`), going back at least the step's
soak time, from harness reports, the store's live evidence, or both (the
gate's rules, `parity.gate.judge_domain`). A step to SHADOW needs no
evidence (nothing is compared at OFF). `back DOMAIN` moves it one step back
at once, whatever the evidence (what a FAIL calls for).

Either writes the file in place with tomlkit, so comments and layout stay
and the change reads as a small diff: the domain's `stage`, `percent` and
`since` (now). It prints the move and the evidence it relied on.

Exit codes: 0 moved; 1 refused (a FAIL, no evidence, no schedule, nothing
to move to, a file it cannot read or write); 2 held (INCONCLUSIVE: too few
comparisons, or not soaked long enough).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import attrs
import tomlkit

from gateway.events import iso, parse_iso, utcnow
from gateway.rollout import (
    DOMAINS,
    DomainRollout,
    RolloutConfig,
    RolloutError,
    Stage,
    Step,
    parse_rollout,
)
from parity.gate import (
    DEFAULT_LIVE_WINDOW,
    DEFAULT_MAX_AGE,
    EXIT_FAIL,
    EXIT_HOLD,
    EXIT_PASS,
    judge_domain,
)
from parity.gate import parse_duration as parse_delta

__all__ = [
    "add_rollout_arguments",
    "advance",
    "back",
    "next_step",
    "previous_step",
    "run_rollout_command",
]

OFF_STEP = Step(Stage.OFF, 100.0, 0.0, "0s")


def next_step(schedule: tuple[Step, ...], line: DomainRollout) -> Step | None:
    """The first step beyond where the domain stands."""
    return next((s for s in schedule if s.position > line.position), None)


def previous_step(schedule: tuple[Step, ...], line: DomainRollout) -> Step | None:
    """The last step before where the domain stands (OFF before the first)."""
    if not schedule:
        if line.stage is Stage.OFF:
            return None
        return Step(line.stage.previous, 100.0)
    before = [s for s in schedule if s.position < line.position]
    if before:
        return before[-1]
    return OFF_STEP if line.position > OFF_STEP.position else None


def current_step(schedule: tuple[Step, ...], line: DomainRollout) -> Step | None:
    """The step the domain is at, or the last one it has passed."""
    at = [s for s in schedule if s.position <= line.position]
    return at[-1] if at else None


def _describe(stage: Stage, percent: float) -> str:
    return f"{stage.value} {percent:g}%"


def _put(table: Any, key: str, value: Any) -> None:
    """Set a key keeping the comment beside its old value."""
    new = tomlkit.item(value)
    if key in table:
        old = table[key]
        trivia = getattr(old, "trivia", None)
        if trivia is not None:
            new.trivia.comment_ws = trivia.comment_ws
            new.trivia.comment = trivia.comment
    table[key] = new


def _rewrite(text: str, domain: str, step: Step, now: _dt.datetime) -> str:
    doc = tomlkit.parse(text)
    if "domains" not in doc:
        doc["domains"] = tomlkit.table(is_super_table=True)
    domains: Any = doc["domains"]
    if domain not in domains:
        domains[domain] = tomlkit.table()
    table = domains[domain]
    _put(table, "stage", step.stage.value)
    percent = step.percent
    _put(table, "percent", int(percent) if percent == int(percent) else percent)
    _put(table, "since", iso(now))
    return tomlkit.dumps(doc)


def _write(path: Path, text: str) -> None:
    """Replace the file's content in one step (a reader sees the old or the new file)."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> tuple[str, RolloutConfig]:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        reason = f"cannot read the rollout file: {exc.strerror or exc}"
        raise RolloutError(reason, path=str(path)) from None
    return text, parse_rollout(text, str(path))


def _move(path: Path, text: str, domain: str, step: Step, now: _dt.datetime) -> None:
    new = _rewrite(text, domain, step, now)
    parse_rollout(new, str(path))  # never write a file the nodes would refuse
    _write(path, new)


def _load_for(domain: str, flags: Path, out: TextIO) -> tuple[str, RolloutConfig] | None:
    """The rollout file's text and config, if it loads and names `domain` (else
    None, the reason printed)."""
    try:
        text, config = _load(flags)
    except RolloutError as exc:
        print(f"rollout: {exc}", file=out)
        return None
    if domain not in DOMAINS:
        print(
            f"rollout: unknown domain {domain!r} (expected one of {', '.join(DOMAINS)})", file=out
        )
        return None
    return text, config


def advance(
    domain: str,
    flags: Path,
    *,
    reports_dir: Path | None = None,
    store_url: str | None = None,
    live_rows: list[dict] | None = None,
    now: _dt.datetime | None = None,
    max_age: _dt.timedelta = DEFAULT_MAX_AGE,
    live_window: _dt.timedelta = DEFAULT_LIVE_WINDOW,
    out: TextIO = sys.stdout,
) -> int:
    """Move `domain` one step forward when the evidence supports it; the exit code."""
    now = now or utcnow()
    loaded = _load_for(domain, flags, out)
    if loaded is None:
        return EXIT_FAIL
    text, config = loaded
    if not config.schedule:
        print(f"rollout: {flags} has no [schedule] of steps to advance along", file=out)
        return EXIT_FAIL
    line = config.domains[domain]
    here = _describe(line.stage, line.percent)
    step = next_step(config.schedule, line)
    if step is None:
        print(
            f"{domain}: at {here}, the last step of the schedule: nothing to advance to", file=out
        )
        return EXIT_FAIL
    if step.stage >= Stage.LIVE:
        if reports_dir is None and store_url is None and live_rows is None:
            print(
                f"{domain}: {here} -> {step.describe()} needs evidence: give --reports DIR, "
                "--live --store URL, or both",
                file=out,
            )
            return EXIT_FAIL
        if live_rows is None and store_url is not None:
            from parity.live import read_evidence

            try:
                live_rows = read_evidence(store_url, now - max(max_age, live_window))
            except Exception as exc:
                print(f"rollout: cannot read live evidence: {exc}", file=out)
                return EXIT_FAIL
        at = current_step(config.schedule, line)
        soak = _dt.timedelta(seconds=at.soak_s) if at is not None else None
        since = parse_iso(line.since) if line.since else None
        verdict = judge_domain(
            domain,
            line.stage,
            rollout=config,
            reports_dir=reports_dir,
            live_rows=live_rows,
            now=now,
            max_age=max_age,
            live_window=live_window,
            since=since,
            soak=soak,
        )
        if verdict.outcome != "PASS":
            if verdict.missing:  # nothing wrong was seen: nothing to roll back for
                verdict = attrs.evolve(verdict, rollback_to=None)
            print(verdict.line(), file=out)
            if verdict.outcome == "FAIL" and verdict.missing:
                print(
                    f"{domain}: not advanced: no evidence of the current step ({here}) yet",
                    file=out,
                )
                return EXIT_FAIL
            if verdict.outcome == "FAIL":
                back_to = previous_step(config.schedule, line)
                if back_to is not None:
                    print(
                        f"{domain}: not advanced; to roll back: cutover rollout back {domain} "
                        f"--flags {flags} (to {back_to.describe()})",
                        file=out,
                    )
                return EXIT_FAIL
            print(f"{domain}: not advanced: hold at {here}", file=out)
            return EXIT_HOLD
        relied = [f"    {item}" for item in verdict.evidence]
        if since is None:
            relied.append("    (the step has no `since`: all evidence at SHADOW or beyond counted)")
        head = f"{domain}: {here} -> {step.describe()}: the gate passes at {here}: {verdict.reason}"
    else:
        relied = []
        head = f"{domain}: {here} -> {step.describe()}: no evidence needed below LIVE"
    try:
        _move(flags, text, domain, step, now)
    except (OSError, RolloutError) as exc:
        print(f"rollout: cannot write {flags}: {exc}", file=out)
        return EXIT_FAIL
    print(head, file=out)
    if relied:
        print("  evidence relied on:", file=out)
        for item in relied:
            print(item, file=out)
    print(f"  wrote {flags}: review the change as a diff", file=out)
    return EXIT_PASS


def back(
    domain: str, flags: Path, *, now: _dt.datetime | None = None, out: TextIO = sys.stdout
) -> int:
    """Move `domain` one step back at once; the exit code."""
    now = now or utcnow()
    loaded = _load_for(domain, flags, out)
    if loaded is None:
        return EXIT_FAIL
    text, config = loaded
    line = config.domains[domain]
    here = _describe(line.stage, line.percent)
    step = previous_step(config.schedule, line)
    if step is None:
        print(f"{domain}: at {here}: there is no step before it", file=out)
        return EXIT_FAIL
    try:
        _move(flags, text, domain, step, now)
    except (OSError, RolloutError) as exc:
        print(f"rollout: cannot write {flags}: {exc}", file=out)
        return EXIT_FAIL
    print(f"{domain}: {here} -> {step.describe()} (one step back; no evidence needed)", file=out)
    print(f"  wrote {flags}: review the change as a diff", file=out)
    return EXIT_PASS


def add_rollout_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rollout_command", required=True)
    forward = sub.add_parser("advance", help="one step forward, when the evidence supports it")
    forward.add_argument("domain")
    forward.add_argument("--flags", required=True, help="the rollout file (written in place)")
    forward.add_argument("--reports", help="a directory of harness reports")
    forward.add_argument("--live", action="store_true", help="the live evidence in the store")
    forward.add_argument("--store", help="the store URL of the live evidence [CUTOVER_STORE]")
    forward.add_argument("--since", default="24h", help="the live evidence's window (24h)")
    forward.add_argument("--max-age", default="7d", help="the oldest a report may be (7d)")
    backward = sub.add_parser("back", help="one step back at once")
    backward.add_argument("domain")
    backward.add_argument("--flags", required=True, help="the rollout file (written in place)")


def run_rollout_command(args: argparse.Namespace) -> int:
    flags = Path(args.flags)
    if args.rollout_command == "back":
        return back(args.domain, flags)
    store_url = None
    if args.live:
        store_url = args.store or os.environ.get("CUTOVER_STORE")
        if not store_url:
            print("rollout: --live needs --store URL (or CUTOVER_STORE)", file=sys.stderr)
            return EXIT_FAIL
    try:
        window = parse_delta(args.since)
        max_age = parse_delta(args.max_age)
    except ValueError as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return advance(
        args.domain,
        flags,
        reports_dir=Path(args.reports) if args.reports else None,
        store_url=store_url,
        max_age=max_age,
        live_window=window,
    )
