"""The synchronous publisher is generated from the Trio one and is up to date."""

from __future__ import annotations

from ops.unasync import SOURCE, TARGET, generate


def test_the_sync_publisher_is_generated_from_the_trio_one():
    assert TARGET.read_text() == generate(SOURCE.read_text()), "run: python -m ops.unasync"


def test_the_generated_publisher_has_no_async_left():
    text = TARGET.read_text()
    assert "async " not in text and "await " not in text
    assert "import trio" not in text and "trio.sleep" not in text
