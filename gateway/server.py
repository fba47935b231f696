"""Serving a node on one port, and shutting it down gracefully.

`gateway.front.Front` accepts every TCP connection: `GET /ws` upgrades go to
the push path's own WebSocket transport (`gateway.ws.endpoint`), every other
connection to Hypercorn's Trio connection server running the quart-trio app.

Shutdown order on SIGTERM or SIGINT (or the `stop` event in tests): report
not-ready, stop accepting, tell Hypercorn's connections to finish, send every
WebSocket `system.reconnect` with a jittered delay and close it with 1012,
then end whatever is still open when the grace period is over (its tasks
cancelled, its socket closed). The node exits within `--grace-s` whatever
its clients do.
"""

from __future__ import annotations

import gc
import logging
import signal
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.utils import wrap_app

from gateway.app import create_app, lean_routes
from gateway.beacons import announcement as beacon_announcement
from gateway.config import Settings
from gateway.front import Front
from gateway.runtime import Runtime, run_runtime
from gateway.ws.connection import WsSettings
from gateway.ws.endpoint import WebSocketEndpoint
from gateway.ws.wire import WireSettings

__all__ = ["serve", "serve_node"]

#: The collector's thresholds in a node's own process (CPython's are 700, 10, 10).
#: A broadcast allocates a few short-lived objects per recipient; at 700 the
#: young generations were collected so often that what survived them (each
#: connection's new wakeup events and pending frames) set off a full
#: collection of every connection's objects every second broadcast.
GC_THRESHOLDS = (20_000, 10, 10)

log = logging.getLogger("cutover.server")


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [settings.bind]
    config.graceful_timeout = settings.grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    return config


def wire_settings(settings: Settings) -> WireSettings:
    return WireSettings.from_settings(settings)


def ws_settings(settings: Settings) -> WsSettings:
    return WsSettings.from_settings(settings, parity=beacon_announcement(settings))


def split_bind(bind: str) -> tuple[str | None, int]:
    """`HOST:PORT` (`[::1]:8080`, `:8080` for every interface) as (host, port)."""
    name, _, port = bind.rpartition(":")
    try:
        return name.strip("[]") or None, int(port)
    except ValueError:
        raise ValueError(f"--bind {bind!r}: expected HOST:PORT") from None


def _url(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _listeners(host: str | None, port: int, *, reuse_port: bool) -> list:
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    host = host or "0.0.0.0"
    sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
    await sock.bind((host, port))
    sock.listen(1024)
    return [trio.SocketListener(sock)]


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            return


async def serve(
    settings: Settings,
    *,
    stop: trio.Event | None = None,
    freeze_gc: bool = False,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a signal (or `stop`), then shut down gracefully.

    `task_status.started` receives `(runtime, binds)` once the node accepts.
    With `freeze_gc` (a node's own process: `cutover serve`), everything
    allocated by start-up is moved out of the collector's reach (`gc.freeze`)
    and the youngest generation is collected less often (`GC_THRESHOLDS`).
    """
    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(run_runtime, settings)
        await serve_node(runtime, stop=stop, freeze_gc=freeze_gc, task_status=task_status)
        nursery.cancel_scope.cancel()


async def serve_node(
    runtime: Runtime,
    *,
    stop: trio.Event | None = None,
    freeze_gc: bool = False,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on the runtime's bind until `stop` (or a signal), then drain."""
    settings = runtime.settings
    config = hypercorn_config(settings)
    quart_app = create_app(runtime)
    app = wrap_app(quart_app, config.wsgi_max_body_size, "asgi")
    endpoint = WebSocketEndpoint(runtime, wire_settings(settings), ws_settings(settings))
    lifespan_state: dict = {}
    front = Front(
        app,
        config,
        endpoint,
        lifespan_state=lifespan_state,
        head_timeout_s=settings.head_timeout_s,
        max_head_bytes=settings.max_head_bytes,
        lean=lean_routes(quart_app),
    )
    lifespan = Lifespan(app, config, lifespan_state)
    host, port = split_bind(settings.bind)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners = await _listeners(host, port, reuse_port=settings.reuse_port)
        binds = [_url(listener) for listener in listeners]
        runtime.advertise(binds)
        if freeze_gc:
            # The modules, schemas, registry and app built at start-up live as long
            # as the process: a full collection need not walk them again. A
            # broadcast's allocations then trigger collections that only see the
            # connections' objects.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    partial(
                        trio.serve_listeners, front.handle, listeners, handler_nursery=connections
                    )
                )
                log.info("cutover node %s serving on %s", settings.node_id, ", ".join(binds))
                task_status.started((runtime, binds))
                if stop is None:
                    await _until_signal()
                else:
                    await stop.wait()
                deadline = trio.current_time() + settings.grace_s
                runtime.draining = True
                accepting.cancel_scope.cancel()  # closes the listeners
            await front.stop_http()
            await runtime.hub.shutdown(max(0.0, deadline - trio.current_time()))
            await front.drain(deadline)
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
