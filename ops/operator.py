"""`cutover ops ...`: the operator's commands against a running node or a rollout file.

The commands that talk to a node run on Trio over `gateway.client`, the client
the benchmarks and the tests use too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx
import trio

from gateway.client import GraphQL, GraphQLFailed, metric_total, scrape_metrics

__all__ = ["add_ops_arguments", "run_ops"]

TIMEOUT_S = 10.0
STATUS_SERIES = (
    "cutover_connections_active",
    "cutover_connects_total",
    "cutover_disconnects_total",
    "cutover_events_published_total",
    "cutover_events_delivered_total",
    "cutover_send_buffer_overflows_total",
    "cutover_poll_requests_total",
)


def add_ops_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ops_command", required=True)
    status = sub.add_parser("status", help="a node's readiness, connections and traffic")
    status.add_argument("--url", required=True)
    notice = sub.add_parser(
        "notice",
        help="send system.notice to every connected user (a tenant admin's: that tenant's only)",
    )
    notice.add_argument("--url", required=True)
    notice.add_argument(
        "--token",
        required=True,
        help="a token with the admin scope; without a tenant claim it reaches every tenant",
    )
    notice.add_argument("--severity", default="info")
    notice.add_argument("text")
    flags = sub.add_parser("flags", help="check a rollout file and show who gets which stage")
    flags.add_argument("path")
    flags.add_argument("--user", action="append", default=[], help="show this user's stages")


async def _status(args: argparse.Namespace, out) -> int:
    async with httpx.AsyncClient(base_url=args.url, timeout=TIMEOUT_S) as client:
        ready = await client.get("/readyz")
        try:
            samples = await scrape_metrics(client, args.url)
        except httpx.HTTPStatusError:
            samples = []  # /metrics kept from this address (a proxy): the counts show 0
        cluster = await client.get("/cluster/nodes")
    print(f"readyz: {ready.status_code} {ready.json().get('status')}", file=out)
    _print_nodes(cluster, out)
    for name in STATUS_SERIES:
        print(f"{name:<40} {metric_total(samples, name):>12.0f}", file=out)
    return 0 if ready.status_code == 200 else 1


def _print_nodes(response: httpx.Response, out) -> None:
    """Every node of the cluster (with Redis) or this one, with its connections."""
    if response.status_code == 404:
        return  # a node from before `/cluster/nodes`
    body = response.json()
    if response.status_code != 200:
        print(f"nodes: unknown ({body.get('status')}: {body.get('detail', '')})", file=out)
        return
    nodes = body["nodes"]
    live = [node for node in nodes if node.get("alive")]
    print(f"nodes: {len(live)} live ({body['backplane']} backplane)", file=out)
    for node in nodes:
        here = " (this node)" if node["id"] == body["node"] else ""
        if node.get("alive"):
            url = node.get("url") or "-"
            count = node.get("connections", 0)
            print(f"  {node['id']:<24} {url:<28} {count:>8} connections{here}", file=out)
        else:
            print(f"  {node['id']:<24} lease expired, being cleared{here}", file=out)


async def _notice(args: argparse.Namespace, out) -> int:
    query = "mutation($t:String!,$s:String){ broadcastNotice(text:$t, severity:$s) }"
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        try:
            await GraphQL(http, args.url, args.token).query(
                query, {"t": args.text, "s": args.severity}
            )
        except GraphQLFailed as failed:
            body = failed.body if isinstance(failed.body, dict) else {}
            print(f"refused: {json.dumps(body.get('errors') or body.get('error'))}", file=out)
            return 1
    print("notice sent", file=out)
    return 0


def _flags(args: argparse.Namespace, out) -> int:
    from gateway.rollout import RolloutError, load_rollout

    try:
        config = load_rollout(Path(args.path))
    except RolloutError as exc:
        print(f"invalid: {exc}", file=out)
        return 1
    print(f"{args.path}: valid ({config.source_hash[:12]})", file=out)
    print(config.summary(), file=out)
    for user in args.user:
        stages = ", ".join(f"{d}={v['stage']}" for d, v in config.view_for(user).items())
        print(f"{user}: {stages}", file=out)
    return 0


def run_ops(args: argparse.Namespace, out=sys.stdout) -> int:
    if args.ops_command == "flags":
        return _flags(args, out)
    node_command = {"status": _status, "notice": _notice}[args.ops_command]
    return trio.run(node_command, args, out)
