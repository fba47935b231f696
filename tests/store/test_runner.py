"""`run_store`: blocking calls in worker threads under named limiters."""

from __future__ import annotations

import threading

import trio

from gateway.store import limiter_for, run_store


async def test_run_store_runs_in_a_worker_thread_with_kwargs():
    main = threading.get_ident()

    def work(a, b=0):
        return threading.get_ident(), a + b

    with trio.fail_after(10):
        ident, total = await run_store(work, 1, b=2)
    assert total == 3 and ident != main


async def test_each_workload_has_its_own_limiter():
    assert limiter_for("store") is limiter_for("store")
    assert limiter_for("store").total_tokens == 8
    assert limiter_for("graphql").total_tokens == 4
    assert limiter_for("store") is not limiter_for("graphql")


async def test_the_limiter_bounds_concurrency():
    lock = threading.Lock()
    running = peak = 0

    def work():
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        threading.Event().wait(0.02)
        with lock:
            running -= 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(lambda: run_store(work, limiter="test-narrow"))
    assert 1 <= peak <= limiter_for("test-narrow").total_tokens
