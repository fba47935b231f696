"""Generate the synchronous publisher from the Trio one (`python -m ops.unasync`).

Like httpcore's unasync script: a fixed list of token rewrites turns
`gateway/_publish_trio.py` into `gateway/_publish_sync.py`. `--check` exits 1
when the generated file is out of date (the test suite runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["SOURCE", "TARGET", "generate"]

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "gateway" / "_publish_trio.py"
TARGET = ROOT / "gateway" / "_publish_sync.py"

# (pattern, replacement), applied in order, whole words.
REWRITES = [
    (r"async def __aenter__", "def __enter__"),
    (r"async def __aexit__", "def __exit__"),
    (r"async def aclose", "def close"),
    (r"async def ", "def "),
    (r"async with ", "with "),
    (r"await trio\.sleep\(", "time.sleep("),
    (r"await ", ""),
    (r"\.aclose\(\)", ".close()"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bTrioPublisher\b", "Publisher"),
    (r"^import trio\n", ""),
    (r"^from collections\.abc import", "import time\nfrom collections.abc import"),
    (
        r"The same publisher for Trio programs: `pub\.publish\(\.\.\.\)`\.",
        "A synchronous publisher for one gateway (thread-safe like httpx.Client).",
    ),
    (r"\(\(await self\._send\(body\)\)\[0\]\)", "self._send(body)[0]"),
]


SYNC_DOCSTRING = '''"""The synchronous publisher: GENERATED from `gateway/_publish_trio.py` by
`python -m ops.unasync`; do not edit (edit the Trio publisher, then run it).
"""'''


def generate(source: str) -> str:
    docstring_end = source.index('"""', 3) + 3
    text = SYNC_DOCSTRING + source[docstring_end:]
    for pattern, replacement in REWRITES:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text.replace("return (self._send(body))[0]", "return self._send(body)[0]")


def main(argv: list[str]) -> int:
    wanted = generate(SOURCE.read_text())
    if "--check" in argv:
        if TARGET.read_text() != wanted:
            print(f"{TARGET} is out of date: run python -m ops.unasync", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
