"""The browser SDK's unit tests (clients/js/test/) under Node's own test runner.

They need no browser and no server: backoff with full jitter, dedupe, gap
detection and resume, reset and snapshot, the reducer against the golden
sequences of contracts/fixtures/reducer/, the path plan and the fallback
state machine (hybrid mode included), the offline chat.send queue, the token
refresh flow and the tabs' leader election and hand-over, with a fake clock,
a fake server and a fake BroadcastChannel.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[2] / "clients" / "js"


@pytest.mark.slow
def test_the_sdk_unit_tests_pass_under_node():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed (installed by `make test`)")
    result = subprocess.run(
        [node, "--test", "test/"], cwd=SDK, capture_output=True, text=True, timeout=300
    )
    summary = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", result.stdout, re.MULTILINE))
    failures = re.findall(r"^not ok \d+ - (.*)$", result.stdout, re.MULTILINE)
    assert result.returncode == 0, f"failed: {failures}\n{result.stdout[-6000:]}\n{result.stderr}"
    assert int(summary["fail"]) == 0
    assert int(summary["pass"]) >= 50, summary


def test_the_module_has_no_dependencies():
    """One module, no imports: what the gateway serves at /client/cutover.js is all of it."""
    source = (SDK / "cutover.js").read_text("utf-8")
    assert not re.search(r"^\s*import\s", source, re.MULTILINE)
    assert "require(" not in source
    assert '"dependencies"' not in (SDK / "package.json").read_text("utf-8")
