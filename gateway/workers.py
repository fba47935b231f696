"""`cutover serve --workers N`: N Trio processes on one port, one per core.

The supervisor reserves the port, then starts N worker processes that each
bind it with `SO_REUSEPORT`, so the kernel spreads new connections over them.
Each worker is a whole node (`<node-id>-w<i>`) sharing the store and Redis
with the others; that is why more than one worker needs `--redis-url`
(`Settings.check` refuses otherwise): without a backplane an event committed
by one worker would not reach the connections of another.

SIGTERM or SIGINT is passed on to every worker, which shuts down gracefully
(`gateway.server`); a worker that dies while the supervisor is not stopping is
started again after a second.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.connection import wait

import attrs

from gateway.config import Settings
from gateway.server import split_bind

__all__ = ["reserve_port", "run_workers"]

log = logging.getLogger("cutover.workers")

RESTART_DELAY_S = 1.0


def reserve_port(bind: str) -> tuple[socket.socket, str]:
    """A bound, non-listening `SO_REUSEPORT` socket holding the port (a `:0` bind
    picks a free one), and the bind the workers share."""
    host, port = split_bind(bind)
    host = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    chosen = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"{shown}:{chosen}"


def _worker(settings: Settings, log_level: str) -> None:
    import trio

    from gateway.server import serve
    from ops.logs import configure_logging

    configure_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops workers with SIGTERM
    trio.run(functools.partial(serve, settings, freeze_gc=True))


def run_workers(settings: Settings, log_level: str = "INFO") -> int:
    """Run `settings.workers` worker processes until SIGTERM or SIGINT."""
    reserved, bind = reserve_port(settings.bind)
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    workers: dict[int, multiprocessing.process.BaseProcess] = {}

    def start(index: int) -> None:
        worker_settings = attrs.evolve(
            settings,
            bind=bind,
            node_id=f"{settings.node_id}-w{index}",
            workers=1,
            reuse_port=True,
        )
        process = context.Process(
            target=_worker, args=(worker_settings, log_level), name=f"cutover-w{index}"
        )
        process.start()
        workers[index] = process

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(workers))
        stopping.set()
        for process in workers.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("starting %d workers on %s", settings.workers, bind)
    for index in range(settings.workers):
        start(index)
    try:
        while workers:
            wait([p.sentinel for p in workers.values()], timeout=1.0)
            for index, process in list(workers.items()):
                if process.is_alive():
                    continue
                process.join()
                del workers[index]
                if not stopping.is_set():
                    log.warning(
                        "worker %d exited with %s; starting it again", index, process.exitcode
                    )
                    stopping.wait(RESTART_DELAY_S)
                    if not stopping.is_set():
                        start(index)
    finally:
        reserved.close()
    return 0
