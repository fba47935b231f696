"""Helpers for the benchmark smoke tests: run a benchmark at a tiny size."""

from __future__ import annotations

import argparse
import re

NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def bench_args(**overrides: object) -> argparse.Namespace:
    values = {
        "duration": 1.0,
        "connections": 20,
        "rate": 20.0,
        "users": 20,
        "clients": 2,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def table_rows(output: str, header_start: str) -> dict[str, list[str]]:
    """The rows of the table whose header starts with `header_start`, by first cell."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("note:"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def number(cell: str) -> float:
    assert NUMBER.fullmatch(cell), f"not a number: {cell!r}"
    return float(cell.replace(",", ""))
