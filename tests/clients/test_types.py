"""The SDK's type declarations (clients/js/cutover.d.ts) describe it as an app uses
it: an example app (clients/js/test/types/usage.ts) compiles under `tsc --strict`,
and one that misuses the API does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TSC = ROOT / "tests" / "browser" / "node_modules" / ".bin" / "tsc"
USAGE = ROOT / "clients" / "js" / "test" / "types" / "usage.ts"
FLAGS = ["--noEmit", "--strict", "--target", "es2022", "--module", "nodenext"]
FLAGS += ["--moduleResolution", "nodenext", "--lib", "es2022,dom"]


def tsc(path: Path) -> subprocess.CompletedProcess:
    if not TSC.exists():
        pytest.fail("TypeScript is installed by `make test` (npm ci in tests/browser)")
    return subprocess.run(
        [str(TSC), *FLAGS, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_the_declarations_type_check_an_app():
    result = tsc(USAGE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_declarations_refuse_a_misuse():
    bad = USAGE.parent / "misuse.tmp.ts"
    text = USAGE.read_text().replace("void main();", "")
    bad.write_text(text + '\nclient.sendMessage(1, 2);\nconst status: Status = "flying";\n')
    try:
        result = tsc(bad)
    finally:
        bad.unlink()
    assert result.returncode != 0
    assert "TS2345" in result.stdout and "TS2322" in result.stdout, result.stdout
