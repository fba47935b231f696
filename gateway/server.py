"""Serving a node with Hypercorn's Trio worker, and shutting it down gracefully.

Shutdown order on SIGTERM or SIGINT (or the `stop` event in tests): report
not-ready, stop accepting, send `system.reconnect` with a jittered delay to
every WebSocket and close it with 1012 (Hypercorn leaves open WebSockets to
its grace deadline), then let Hypercorn finish in-flight requests within the
grace period.
"""

from __future__ import annotations

import logging
import signal
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from gateway.app import create_app
from gateway.config import Settings
from gateway.runtime import Runtime, run_runtime
from gateway.ws.quart_adapter import mount_websocket

__all__ = ["serve"]

log = logging.getLogger("cutover.server")


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [settings.bind]
    config.websocket_max_message_size = settings.max_frame_bytes
    config.graceful_timeout = settings.grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    return config


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            return


async def serve(
    settings: Settings,
    *,
    stop: trio.Event | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a signal (or `stop`), then shut down gracefully.

    `task_status.started` receives `(runtime, binds)` once the node accepts.
    """
    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(run_runtime, settings)
        app = mount_websocket(create_app(runtime), runtime)
        stop_accepting = trio.Event()
        with trio.move_on_after(settings.grace_s + 5) as deadline:
            deadline.deadline = float("inf")
            async with trio.open_nursery() as web:
                binds = await web.start(
                    partial(
                        hypercorn_serve,
                        app,
                        hypercorn_config(settings),
                        shutdown_trigger=stop_accepting.wait,
                    )
                )
                log.info("cutover node %s serving on %s", settings.node_id, ", ".join(binds))
                task_status.started((runtime, binds))
                if stop is None:
                    await _until_signal()
                else:
                    await stop.wait()
                deadline.deadline = trio.current_time() + settings.grace_s + 5
                runtime.draining = True
                stop_accepting.set()
                await runtime.hub.shutdown(settings.grace_s)
        nursery.cancel_scope.cancel()
