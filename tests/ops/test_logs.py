"""Logs: one JSON object per line, and no line per HTTP request of a client library
(benchmarks and parity runs make thousands of them)."""

from __future__ import annotations

import json
import logging

from ops.logs import configure_logging


def test_http_client_requests_are_not_logged_but_their_warnings_are(capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("httpx").level)
    try:
        configure_logging("INFO")
        logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1/graphql "200 OK"')
        logging.getLogger("httpx").warning("retrying")
        logging.getLogger("cutover.bench").info("table printed")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], level, httpx_level = saved
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(httpx_level)
    assert [(entry["logger"], entry["msg"]) for entry in lines] == [
        ("httpx", "retrying"),
        ("cutover.bench", "table printed"),
    ]
