"""Two real `cutover serve` processes sharing one SQLite file and one Redis.

Each node is a separate process with its own `--node-id`; they share the
store (SQLite in WAL mode across processes) and a Redis server, through which
events, typing, presence, connection slots and the node list travel. The
clients are trio-websocket and httpx over real sockets. Two tests start a
redis-server of their own, to kill it (or a node) under the cluster.
"""

from __future__ import annotations

import argparse
import io
import shutil
import signal
import statistics
import time
import uuid

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected

from ops.operator import add_ops_arguments, run_ops
from tests.e2e.client import gql, ws_connect
from tests.ws.redis_nodes import SHARED_REDIS, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

NEW_CONV = "mutation($p:[ID!]!){ createConversation(participantIds:$p){ id } }"
SEND = "mutation($c:ID!,$b:String!){ sendChatMessage(conversationId:$c, body:$b){ id } }"


def start_pair(make_server, tmp_path, redis_url: str, *extra: str):
    """Two nodes on one SQLite file and one Redis prefix (unique to the test)."""
    prefix = f"cutover-e2e-{uuid.uuid4().hex[:8]}:"
    shared = tmp_path / "shared"
    shared.mkdir()
    common = ["--redis-url", redis_url, "--redis-prefix", prefix, "--grace-s", "3", *extra]
    one = make_server("--node-id", "node-1", *common, workdir=shared)
    two = make_server("--node-id", "node-2", *common, workdir=shared)
    return one, two


async def ready(node) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{node.url}/readyz")
    return response.status_code, response.json()


def ops(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_ops_arguments(parser)
    out = io.StringIO()
    return run_ops(parser.parse_args(list(argv)), out), out.getvalue()


async def test_chat_typing_and_presence_cross_nodes(make_server, tmp_path, uid):
    one, two = start_pair(make_server, tmp_path, SHARED_REDIS)
    alice, bob = uid("alice"), uid("bob")
    conversation = (await gql(one.url, one.token(alice), NEW_CONV, {"p": [bob]}))[
        "createConversation"
    ]["id"]
    async with ws_connect(one, alice) as on_one:
        welcome = await on_one.next_of("session.welcome")
        assert welcome["payload"]["nodeId"] == "node-1"
        assert (await on_one.call("subscribe", {"topic": f"presence:{bob}"}))["type"] == "ack"
        assert (await on_one.call("subscribe", {"topic": f"conversation:{conversation}"}))[
            "type"
        ] == "ack"
        async with ws_connect(two, bob) as on_two:
            assert (await on_two.next_of("session.welcome"))["payload"]["nodeId"] == "node-2"
            # bob is ONLINE on node 2: alice, on node 1, is told
            seen = await on_one.next_of("user.presence.updated")
            assert seen["payload"]["userId"] == bob and seen["payload"]["status"] == "ONLINE"
            assert (await on_two.call("subscribe", {"topic": f"conversation:{conversation}"}))[
                "type"
            ] == "ack"

            # a message alice sends on node 1 reaches bob on node 2 live
            latencies = []
            for n in range(10):
                started = time.perf_counter()
                reply = await on_one.call(
                    "chat.send",
                    {"conversationId": conversation, "body": f"hi {n}", "clientMessageId": f"m{n}"},
                )
                assert reply["type"] == "ack", reply
                message = await on_two.next_of("chat.message", timeout=3)
                latencies.append(time.perf_counter() - started)
                assert message["payload"]["message"]["body"] == f"hi {n}"
            # and one sent through the polling path of node 2 reaches alice on node 1
            await gql(two.url, two.token(bob), SEND, {"c": conversation, "b": "back"})
            with trio.fail_after(3):  # alice's stream also holds her own messages
                while True:
                    back = await on_one.next_of("chat.message")
                    if back["payload"]["message"]["body"] == "back":
                        break

            # typing crosses too, in both directions
            await on_one.send("chat.typing", {"conversationId": conversation, "state": "started"})
            typing = await on_two.next_of("chat.typing.started", timeout=3)
            assert typing["payload"]["userId"] == alice
            await on_two.send("chat.typing", {"conversationId": conversation, "state": "started"})
            assert (await on_one.next_of("chat.typing.started", timeout=3))["payload"][
                "userId"
            ] == bob

            # the operator sees both nodes from either
            code, text = await trio.to_thread.run_sync(ops, "status", "--url", two.url)
            assert code == 0 and "nodes: 2 live (redis backplane)" in text, text
            assert "node-1" in text and "node-2" in text and one.url in text
        # bob left node 2: OFFLINE on node 1
        gone = await on_one.next_of("user.presence.updated", timeout=5)
        assert gone["payload"]["status"] == "OFFLINE"
    print(
        "chat.send on node 1 -> chat.message on node 2 (ack round trip included): "
        f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )


async def test_the_connection_limit_counts_both_nodes(make_server, tmp_path, uid):
    one, two = start_pair(make_server, tmp_path, SHARED_REDIS, "--max-connections-per-user", "2")
    carol = uid("carol")
    async with ws_connect(one, carol) as first, ws_connect(two, carol) as second:
        await first.next_of("session.welcome")
        await second.next_of("session.welcome")
        for node in (one, two):
            with pytest.raises(ConnectionRejected) as refused:
                async with ws_connect(node, carol):
                    pass
            assert refused.value.status_code == 429
    # both slots are free again, on either node
    with trio.fail_after(5):
        while True:
            try:
                async with ws_connect(two, carol) as again, ws_connect(two, carol) as twice:
                    await again.next_of("session.welcome")
                    await twice.next_of("session.welcome")
                    break
            except ConnectionRejected:
                await trio.sleep(0.05)


async def test_redis_restart_readiness_and_recovery(make_server, tmp_path, uid):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        one, two = start_pair(make_server, tmp_path, redis.url)
        alice, bob = uid("alice"), uid("bob")
        conversation = (await gql(one.url, one.token(alice), NEW_CONV, {"p": [bob]}))[
            "createConversation"
        ]["id"]
        async with ws_connect(two, bob) as on_two:
            await on_two.next_of("session.welcome")
            assert (await ready(two))[0] == 200

            redis.kill()
            with trio.fail_after(5):
                while (await ready(two))[0] != 503:
                    await trio.sleep(0.05)
            assert (await ready(two))[1]["status"] == "backplane unavailable"
            # committed while Redis is away: the store tail delivers it within seconds
            await gql(one.url, one.token(alice), SEND, {"c": conversation, "b": "during"})
            during = await on_two.next_of("chat.message", timeout=8)
            assert during["payload"]["message"]["body"] == "during"

            restarted = time.perf_counter()
            await trio.to_thread.run_sync(redis.start)
            with trio.fail_after(10):
                while (await ready(one))[0] != 200 or (await ready(two))[0] != 200:
                    await trio.sleep(0.02)
            recovered = time.perf_counter() - restarted
            started = time.perf_counter()
            await gql(one.url, one.token(alice), SEND, {"c": conversation, "b": "after"})
            after = await on_two.next_of("chat.message", timeout=3)
            assert after["payload"]["message"]["body"] == "after"
            assert time.perf_counter() - started < 2  # live again, not the 5 s tail
        print(f"both nodes ready again {recovered:.2f} s after redis-server restarted")
    finally:
        redis.kill()


async def test_a_killed_nodes_users_go_offline(make_server, tmp_path, uid):
    one, two = start_pair(make_server, tmp_path, SHARED_REDIS, "--redis-lease-ttl-s", "2")
    alice, bob = uid("alice"), uid("bob")
    await gql(one.url, one.token(alice), NEW_CONV, {"p": [bob]})
    async with ws_connect(one, alice) as on_one:
        await on_one.next_of("session.welcome")
        assert (await on_one.call("subscribe", {"topic": f"presence:{bob}"}))["type"] == "ack"
        async with ws_connect(two, bob) as on_two:
            await on_two.next_of("session.welcome")
            online = await on_one.next_of("user.presence.updated")
            assert online["payload"]["status"] == "ONLINE"
            two.signal(signal.SIGKILL)
            killed = time.perf_counter()
            two.wait(10)
            offline = await on_one.next_of("user.presence.updated", timeout=10)
            took = time.perf_counter() - killed
            assert offline["payload"]["status"] == "OFFLINE"
    assert took < 2 + 0.5 + 1.5, took  # the lease, a janitor round (TTL / 4), slack
    print(f"OFFLINE on node 1 {took:.2f} s after node 2 was killed (lease TTL 2 s)")
    code, text = await trio.to_thread.run_sync(ops, "status", "--url", one.url)
    assert code == 0 and "nodes: 1 live" in text, text
