"""The `cutover` command: serve, demo, token, contracts, parity, rollout, bench."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence

import attrs

from gateway.config import ConfigError, Settings, settings_from
from ops.logs import configure_logging

__all__ = ["main"]

FLAG_HELP = {
    "bind": "HOST:PORT to listen on (default 127.0.0.1:8080)",
    "store": "sqlite:///PATH (default sqlite:///var/cutover.db)",
    "flags": "the rollout file (TOML), reloaded when it changes",
    "jwt_secret": "HS256 secret for user and service tokens",
    "jwt_public_key": "PEM public key (file or text) for RS256/ES256",
    "jwks_url": "JWKS URL for RS256/ES256",
    "jwt_algorithms": "comma list of accepted algorithms (pinned; default HS256)",
    "faults": "fault injection (needs --allow-faults), see the README",
    "demo_page": "serve the demo page at /demo (on in `cutover demo`)",
    "parity_sample_rate": "share of polls the browser SDK compares with push and reports (0.05)",
    "parity_beacons_per_minute": "parity beacons a user may send per minute (6)",
    "evidence_flush_s": "seconds between writes of this node's parity evidence to the store (10)",
    "slow_consumer_timeout_s": "a WebSocket write blocked this long resets the connection (5)",
    "ws_compression": "permessage-deflate for clients that offer it: off (default) or on",
    "workers": "serve with N processes on one port (N > 1 needs --redis-url)",
    "reuse_port": "bind with SO_REUSEPORT, sharing the port with other processes",
    "redis_url": "redis://HOST:PORT/DB: the backplane and cluster-wide state of many nodes",
    "redis_lease_ttl_s": "seconds a node's lease in Redis outlives its last heartbeat (20)",
    "redis_prefix": "the prefix of this cluster's Redis keys and channels (cutover:)",
}
BOOL_FLAGS = {"allow_query_token", "allow_faults", "reuse_port", "demo_page"}


def _add_settings_flags(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> None:
    for field in attrs.fields(Settings):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        env = "CUTOVER_" + field.name.upper()
        help_text = f"{FLAG_HELP.get(field.name, '')} [{env}]".strip()
        if field.name in BOOL_FLAGS:
            parser.add_argument(
                flag,
                dest=field.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=field.name, default=None, help=help_text)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    flags = {field.name: getattr(args, field.name, None) for field in attrs.fields(Settings)}
    flags.update({key: value for key, value in overrides.items() if value is not None})
    return settings_from(flags)


def _cmd_serve(args: argparse.Namespace) -> int:
    import trio

    from gateway.server import serve

    settings = _settings(args)
    settings.check()
    if settings.workers > 1:
        from gateway.workers import run_workers

        return run_workers(settings, args.log_level)
    trio.run(functools.partial(serve, settings, freeze_gc=True))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(_settings(args, demo=True))


def _cmd_token(args: argparse.Namespace) -> int:
    from gateway.auth import mint_token

    settings = _settings(args)
    if args.demo_secret:
        from gateway.demo import demo_secret

        settings.jwt_secret = demo_secret()
    if not settings.jwt_secret:
        raise ConfigError(
            "cutover token needs --jwt-secret or CUTOVER_JWT_SECRET "
            "(or --demo: the secret of the node `cutover demo` runs)"
        )
    scopes = [scope for scope in (args.scope or "").split(",") if scope]
    print(
        mint_token(
            settings.jwt_secret,
            args.user,
            admin=args.admin,
            ttl_s=float(args.ttl),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            name=args.name,
            scopes=scopes,
            tenant=args.tenant,
        )
    )
    return 0


def _cmd_contracts(args: argparse.Namespace) -> int:
    if args.contracts_command == "schema":
        import contracts

        schema = contracts.json_schema()
        if args.registry:
            from pathlib import Path

            from gateway.registry import load_registry

            registry = load_registry(
                [Path(p) for p in args.registry], builtins=contracts.builtin_declarations()
            )
            schema = {**schema, "registry": registry.json_schema()}
        json.dump(schema, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    from pathlib import Path

    from gateway.registry.compat import run_check

    return run_check(Path(args.old), Path(args.new))


def _cmd_parity(args: argparse.Namespace) -> int:
    from parity.cli import run_parity_command

    return run_parity_command(args)


def _cmd_rollout(args: argparse.Namespace) -> int:
    from parity.progress import run_rollout_command

    return run_rollout_command(args)


def _cmd_ops(args: argparse.Namespace) -> int:
    from ops.operator import run_ops

    return run_ops(args)


def _cmd_store(args: argparse.Namespace) -> int:
    import os

    from gateway.errors import CutoverError
    from gateway.store import migrate_store

    url = args.store or os.environ.get("CUTOVER_STORE")
    if not url:
        raise ConfigError("cutover store migrate needs --store URL or CUTOVER_STORE")
    try:
        print(migrate_store(url))
    except (CutoverError, ValueError) as exc:
        print(f"cutover: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ops.bench import run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutover", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a gateway node")
    _add_settings_flags(serve, skip=("demo",))
    serve.set_defaults(handler=_cmd_serve)

    demo = commands.add_parser("demo", help="serve a seeded demo on a SQLite file")
    _add_settings_flags(demo, skip=("demo",))
    demo.set_defaults(handler=_cmd_demo)

    token = commands.add_parser("token", help="mint a development token")
    token.add_argument("user")
    token.add_argument("--admin", action="store_true")
    token.add_argument("--ttl", default="3600", help="seconds (default 3600)")
    token.add_argument("--name")
    token.add_argument("--tenant")
    token.add_argument("--scope", help="comma list of extra scopes, e.g. publish")
    token.add_argument(
        "--demo",
        dest="demo_secret",
        action="store_true",
        help="sign with the demo's secret (var/cutover-demo.secret, kept by `cutover demo`)",
    )
    _add_settings_flags(token, skip=("demo",))
    token.set_defaults(handler=_cmd_token)

    contracts_cmd = commands.add_parser("contracts", help="the wire contract")
    contracts_sub = contracts_cmd.add_subparsers(dest="contracts_command", required=True)
    schema = contracts_sub.add_parser("schema", help="print the contract as JSON Schema")
    schema.add_argument("--registry", action="append", help="a registry directory to include")
    check = contracts_sub.add_parser("check", help="check a registry change for compatibility")
    check.add_argument("old")
    check.add_argument("new")
    contracts_cmd.set_defaults(handler=_cmd_contracts)

    parity = commands.add_parser("parity", help="the parity harness and the rollout gate")
    from parity.cli import add_parity_arguments

    add_parity_arguments(parity)
    parity.set_defaults(handler=_cmd_parity)

    rollout_cmd = commands.add_parser(
        "rollout", help="move a domain along the rollout file's schedule, on evidence"
    )
    from parity.progress import add_rollout_arguments

    add_rollout_arguments(rollout_cmd)
    rollout_cmd.set_defaults(handler=_cmd_rollout)

    ops_cmd = commands.add_parser("ops", help="operator commands: status, notice, flags")
    from ops.operator import add_ops_arguments

    add_ops_arguments(ops_cmd)
    ops_cmd.set_defaults(handler=_cmd_ops)

    store_cmd = commands.add_parser("store", help="the store: apply schema migrations")
    store_sub = store_cmd.add_subparsers(dest="store_command", required=True)
    migrate = store_sub.add_parser("migrate", help="apply the migrations the store lacks")
    migrate.add_argument("--store", help="the store URL [CUTOVER_STORE]")
    store_cmd.set_defaults(handler=_cmd_store)

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    from ops.bench import add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"cutover: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
