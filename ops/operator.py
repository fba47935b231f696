"""`cutover ops ...`: the operator's commands against a running node or a rollout file."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import httpx

__all__ = ["add_ops_arguments", "run_ops"]

SERIES = re.compile(r"^(cutover_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


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


def _metrics(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = SERIES.match(line)
        if match and not match.group(1).endswith("_created"):
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(3))
    return totals


def _status(args: argparse.Namespace, out) -> int:
    with httpx.Client(base_url=args.url, timeout=10) as client:
        ready = client.get("/readyz")
        totals = _metrics(client.get("/metrics").text)
        cluster = client.get("/cluster/nodes")
    print(f"readyz: {ready.status_code} {ready.json().get('status')}", file=out)
    _print_nodes(cluster, out)
    for name in (
        "cutover_connections_active",
        "cutover_connects_total",
        "cutover_disconnects_total",
        "cutover_events_published_total",
        "cutover_events_delivered_total",
        "cutover_send_buffer_overflows_total",
        "cutover_poll_requests_total",
    ):
        print(f"{name:<40} {totals.get(name, 0):>12.0f}", file=out)
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


def _notice(args: argparse.Namespace, out) -> int:
    query = "mutation($t:String!,$s:String){ broadcastNotice(text:$t, severity:$s) }"
    response = httpx.post(
        f"{args.url}/graphql",
        json={"query": query, "variables": {"t": args.text, "s": args.severity}},
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=10,
    )
    body = response.json()
    if response.status_code != 200 or body.get("errors") or "error" in body:
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
    handler = {"status": _status, "notice": _notice, "flags": _flags}[args.ops_command]
    return handler(args, out)
