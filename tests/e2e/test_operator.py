"""`cutover ops` against a real node."""

from __future__ import annotations

import argparse
import io

import trio

from ops.operator import add_ops_arguments, run_ops
from tests.e2e.client import ws_connect


def ops(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_ops_arguments(parser)
    out = io.StringIO()
    return run_ops(parser.parse_args(list(argv)), out), out.getvalue()


async def test_status_and_notice(server, uid):
    async with ws_connect(server, uid("alice")) as ws:
        await ws.next()
        code, text = await trio.to_thread.run_sync(ops, "status", "--url", server.url)
        assert code == 0 and "readyz: 200 ready" in text
        assert "cutover_connections_active" in text
        refused, why = await trio.to_thread.run_sync(
            ops, "notice", "--url", server.url, "--token", server.token("bob"), "hello"
        )
        assert refused == 1 and "FORBIDDEN" in why
        admin = server.token("ops", admin=True)
        sent, _ = await trio.to_thread.run_sync(
            ops, "notice", "--url", server.url, "--token", admin, "--severity", "warning", "at 5"
        )
        assert sent == 0
        notice = await ws.next_of("system.notice")
        assert notice["payload"]["text"] == "at 5" and notice["payload"]["severity"] == "warning"
