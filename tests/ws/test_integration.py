"""The connection against the real store (SQLite), domain, rollout and JWT auth.

Worker threads run the store calls here, so these tests use the real clock and
assert no timings; the timed behaviour is covered with fakes and autojump.
"""

from __future__ import annotations

import trio

from gateway.auth import AuthConfig, Authenticator, mint_token
from gateway.domain import Domain, Viewer
from gateway.rollout import parse_rollout
from gateway.store import open_store
from gateway.ws.connection import Connection
from gateway.ws.hub import Hub
from gateway.ws.transport import MemoryTransport

SECRET = "integration-secret-of-enough-length-0123456789"

ROLLOUT = """
[domains.chat]
stage = "LIVE"
percent = 100

[domains.notification]
stage = "OFF"
percent = 100
"""


async def test_chat_over_the_real_store_and_domain(nursery, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'ws.db'}")
    domain = Domain(store)
    rollout = parse_rollout(ROLLOUT)
    auth = Authenticator(AuthConfig(secret=SECRET))
    hub = Hub(domain=domain)
    await nursery.start(hub.run)
    convo = domain.create_conversation(Viewer("alice"), ["bob"]).value

    async def connect(user: str):
        transport = MemoryTransport()
        principal = auth.verify(mint_token(SECRET, user, ttl_s=600))
        conn = Connection(
            transport,
            principal,
            hub=hub,
            store=store,
            domain=domain,
            authenticator=auth,
            rollout=rollout,
        )
        nursery.start_soon(conn.serve)
        welcome = await transport.client.receive()
        assert welcome["type"] == "session.welcome"
        return conn, transport.client, welcome

    with trio.fail_after(20):
        alice_conn, alice, welcome = await connect("alice")
        assert welcome["payload"]["domains"]["chat"]["stage"] == "LIVE"
        assert welcome["payload"]["domains"]["notification"]["stage"] == "OFF"
        bob_conn, bob, bob_welcome = await connect("bob")
        await bob.send("subscribe", {"topic": f"conversation:{convo['id']}"}, id="s")
        assert (await bob.receive())["type"] == "ack"
        await bob.send("subscribe", {"topic": "conversation:not-mine"}, id="s2")
        assert (await bob.receive())["payload"]["code"] in ("FORBIDDEN", "NOT_FOUND")

        payload = {"conversationId": convo["id"], "body": "hello", "clientMessageId": "k1"}
        await alice.send("chat.send", payload, id="m")
        ack, _ = await alice.receive_until(lambda e: e.get("replyTo") == "m")
        assert ack["type"] == "ack" and ack["payload"]["message"]["body"] == "hello"

        got = [await bob.receive() for _ in range(2)]
        seqs = [e["seq"] for e in got]
        assert seqs == [bob_welcome["payload"]["seq"] + 1, bob_welcome["payload"]["seq"] + 2]
        assert {e["type"] for e in got} == {"chat.message", "chat.conversation.updated"}

        await alice.send("chat.typing", {"conversationId": convo["id"], "state": "started"}, id="t")
        await alice.receive_until(lambda e: e.get("replyTo") == "t")
        typing = await bob.receive()
        assert typing["type"] == "chat.typing.started"

        # a token for another user does not extend alice's session
        other = mint_token(SECRET, "mallory", ttl_s=600)
        await alice.send("auth.refresh", {"token": other}, id="r")
        refused, _ = await alice.receive_until(lambda e: e.get("replyTo") == "r")
        assert refused["payload"]["code"] == "UNAUTHORIZED"
        fresh = mint_token(SECRET, "alice", ttl_s=1200)
        await alice.send("auth.refresh", {"token": fresh}, id="r2")
        refreshed, _ = await alice.receive_until(lambda e: e.get("replyTo") == "r2")
        assert refreshed["type"] == "ack" and refreshed["payload"]["expiresAt"].endswith("Z")

        # resume from the welcome position replays exactly what was sent live
        await bob.send(
            "session.resume",
            {"epoch": bob_welcome["payload"]["epoch"], "lastSeq": bob_welcome["payload"]["seq"]},
            id="res",
        )
        resumed, replayed = await bob.receive_until(lambda e: e.get("replyTo") == "res")
        assert [e["seq"] for e in replayed] == seqs
        assert resumed["payload"] == {"fromSeq": seqs[0], "toSeq": seqs[-1]}

        # notification push is OFF for everyone: its seq arrives as stream.skipped
        def notify():
            with store.transaction() as tx:
                return tx.append_event("bob", "notification.new", {"notification": {}})

        event = await trio.to_thread.run_sync(notify)
        await hub.publish([event])
        skipped = await bob.receive()
        assert skipped["type"] == "stream.skipped" and skipped["seq"] == seqs[-1] + 1
        assert skipped["payload"] == {"domain": "notification", "type": "notification.new"}

        alice.close()
        bob.close()
        await alice_conn.closed.wait()
        await bob_conn.closed.wait()
    assert hub.is_empty()
    seen = domain.presence(Viewer("alice"), ["alice", "bob"])
    assert {p["userId"]: p["status"] for p in seen} == {"alice": "OFFLINE", "bob": "OFFLINE"}
    assert all(p["lastSeenAt"] for p in seen)
    await trio.to_thread.run_sync(store.close)


async def test_the_node_tail_delivers_an_event_whose_notification_was_lost(nursery, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'tail.db'}")
    domain = Domain(store)
    auth = Authenticator(AuthConfig(secret=SECRET))
    hub = Hub(domain=domain, store=store, tail_interval_s=0.5)
    await nursery.start(hub.run)
    assert hub.tails
    transport = MemoryTransport()
    conn = Connection(
        transport,
        auth.verify(mint_token(SECRET, "carol", ttl_s=600)),
        hub=hub,
        store=store,
        domain=domain,
        authenticator=auth,
    )
    nursery.start_soon(conn.serve)
    with trio.fail_after(20):
        welcome = await transport.client.receive()
        assert conn.stream is not None and conn.stream._tail_interval_s is None
        # Committed, but never handed to the hub: only the node's tail can find it.
        outcome = domain.create_notification(
            Viewer("ops", frozenset({"admin"})), "carol", "K", "lost"
        )
        assert [e.user_id for e in outcome.events] == ["carol"]
        got = await transport.client.receive()
    assert got["type"] == "notification.new" and got["seq"] == welcome["payload"]["seq"] + 1
    assert got["payload"]["notification"]["text"] == "lost"
    conn.close_soon(1000, "done")
    with trio.fail_after(10):
        await conn.closed.wait()
    store.close()
