"""The push path (PROTOCOL.md section 2) against a real `cutover serve` process.

Each test drives the server over real sockets with trio-websocket (the server
speaks wsproto through Hypercorn) and the polling path with httpx.
"""

from __future__ import annotations

import json
import signal

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from contracts import validate_event
from tests.e2e.client import gql, ws_connect

# Each test runs on one SQLite node and on two PostgreSQL + Redis nodes behind nginx.
ALSO_ON_A_CLUSTER = True

pytestmark = pytest.mark.e2e

ADMIN_NOTE = (
    'mutation($u:ID!,$t:String!){ createNotification(userId:$u, kind:"NOTE", text:$t){ id } }'
)
NEW_CONV = "mutation($p:[ID!]!){ createConversation(participantIds:$p){ id } }"
SEND = "mutation($c:ID!,$b:String!){ sendChatMessage(conversationId:$c, body:$b){ id } }"


async def notify(server, user: str, text: str = "hello") -> None:
    await gql(server.url, server.token("ops", admin=True), ADMIN_NOTE, {"u": user, "t": text})


async def conversation(server, owner: str, *others: str) -> str:
    data = await gql(server.url, server.token(owner), NEW_CONV, {"p": list(others)})
    return data["createConversation"]["id"]


async def handshake_status(url: str, headers: list | None = None) -> int:
    try:
        async with open_websocket_url(url, extra_headers=headers or []):
            return 101
    except ConnectionRejected as rejected:
        return rejected.status_code


# -- handshake and welcome -------------------------------------------------------------------


async def test_welcome_carries_the_contract_fields(server, uid):
    alice = uid("alice")
    await notify(server, alice)
    async with ws_connect(server, alice) as ws:
        welcome = await ws.next()
    assert welcome["type"] == "session.welcome" and welcome["v"] == 1
    payload = welcome["payload"]
    validate_event("session.welcome", payload)
    assert payload["userId"] == alice and payload["seq"] == 1
    assert payload["protocol"] == {"min": 1, "max": 1}
    assert payload["heartbeatIntervalMs"] == 30000 and payload["idleTimeoutMs"] == 75000
    assert payload["limits"]["maxFrameBytes"] == 65536
    assert payload["limits"]["actionsPerSecond"] == 20
    assert set(payload["domains"]) >= {"chat", "notification"}
    assert "seq" not in welcome


async def test_handshake_refusals(server, uid):
    assert await handshake_status(server.ws_url) == 401
    assert await handshake_status(server.ws_url + "?token=garbage") == 401
    expired = server.token(uid("x"), ttl_s=-5)
    assert await handshake_status(server.ws_url, [("Authorization", f"Bearer {expired}")]) == 401


async def test_ticket_is_single_use(server, uid):
    alice = uid("alice")
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{server.url}/realtime/tickets",
            headers={"Authorization": f"Bearer {server.token(alice)}"},
        )
        refused = await client.post(f"{server.url}/realtime/tickets")
    assert response.status_code == 201 and refused.status_code == 401
    ticket = response.json()["ticket"]
    async with ws_connect(server, query=f"ticket={ticket}") as ws:
        assert (await ws.next())["payload"]["userId"] == alice
    assert await handshake_status(f"{server.ws_url}?ticket={ticket}") == 401


async def test_legacy_query_token(server, uid):
    alice = uid("alice")
    async with ws_connect(server, query=f"token={server.token(alice)}") as ws:
        assert (await ws.next())["payload"]["userId"] == alice


async def test_origin_allow_list_and_connection_limit(make_server, uid):
    node = make_server(
        "--allowed-origins", "https://app.example", "--max-connections-per-user", "2"
    )
    alice = uid("alice")
    bearer = ("Authorization", f"Bearer {node.token(alice)}")
    assert await handshake_status(node.ws_url, [bearer, ("Origin", "https://evil.example")]) == 403
    async with ws_connect(node, alice, headers=[("Origin", "https://app.example")]) as first:
        await first.next()
        async with ws_connect(node, alice) as second:
            await second.next()
            assert await handshake_status(node.ws_url, [bearer]) == 429


async def test_unsupported_version_closes_4000(server, uid):
    async with ws_connect(server, uid("alice"), query="v=2") as ws:
        error = await ws.next()
        assert error["type"] == "error" and error["payload"]["code"] == "UNSUPPORTED_VERSION"
        assert await ws.closed() == 4000


# -- durable stream ----------------------------------------------------------------------------


async def test_seq_contiguity_under_concurrent_senders(server, uid):
    reader, *senders = [uid(f"u{i}") for i in range(5)]
    conv = await conversation(server, reader, *senders)
    per_sender = 10
    async with ws_connect(server, reader) as ws:
        welcome = await ws.next()
        start = welcome["payload"]["seq"]

        async def send_all(sender: str) -> None:
            async with ws_connect(server, sender) as own:
                await own.next()
                for n in range(per_sender):
                    reply = await own.call(
                        "chat.send",
                        {
                            "conversationId": conv,
                            "body": f"{sender} {n}",
                            "clientMessageId": f"{sender}-{n}",
                        },
                    )
                    assert reply["type"] == "ack", reply

        async with trio.open_nursery() as nursery:
            for sender in senders:
                nursery.start_soon(send_all, sender)
        # Each message gives the reader a chat.message and a chat.conversation.updated.
        expected = len(senders) * per_sender * 2
        seqs = []
        bodies = []
        while len(seqs) < expected:
            envelope = await ws.next()
            if "seq" in envelope:
                seqs.append(envelope["seq"])
                if envelope["type"] == "chat.message":
                    bodies.append(envelope["payload"]["message"]["body"])
    assert seqs == list(range(start + 1, start + expected + 1))
    for sender in senders:
        mine = [b for b in bodies if b.startswith(sender + " ")]
        assert mine == [f"{sender} {n}" for n in range(per_sender)]


async def test_resume_replays_exactly_the_missed_events(server, uid):
    alice = uid("alice")
    async with ws_connect(server, alice) as ws:
        welcome = (await ws.next())["payload"]
        await notify(server, alice, "seen")
        seen = await ws.next_of("notification.new")
    for n in range(3):
        await notify(server, alice, f"missed {n}")
    async with ws_connect(server, alice) as ws:
        await ws.next()
        reply_id = await ws.send(
            "session.resume", {"epoch": welcome["epoch"], "lastSeq": seen["seq"]}
        )
        replayed = [await ws.next() for _ in range(4)]
    assert [e["seq"] for e in replayed[:3]] == [seen["seq"] + 1, seen["seq"] + 2, seen["seq"] + 3]
    assert [e["payload"]["notification"]["text"] for e in replayed[:3]] == [
        f"missed {n}" for n in range(3)
    ]
    assert replayed[3]["type"] == "session.resumed" and replayed[3]["replyTo"] == reply_id
    assert replayed[3]["payload"] == {"fromSeq": seen["seq"] + 1, "toSeq": seen["seq"] + 3}


async def test_resume_with_a_foreign_epoch_resets(server, uid):
    alice = uid("alice")
    await notify(server, alice)
    async with ws_connect(server, alice) as ws:
        welcome = (await ws.next())["payload"]
        reply = await ws.call("session.resume", {"epoch": "some-other-epoch", "lastSeq": 0})
    assert reply["type"] == "session.reset"
    assert reply["payload"] == {
        "reason": "EPOCH_CHANGED",
        "epoch": welcome["epoch"],
        "seq": welcome["seq"],
    }


async def test_snapshot_then_resume_misses_nothing(server, uid):
    alice, bob = uid("alice"), uid("bob")
    conv = await conversation(server, bob, alice)
    await gql(server.url, server.token(bob), SEND, {"c": conv, "b": "before"})
    snapshot = await gql(
        server.url, server.token(alice), "{ realtimeCursor { epoch seq } chatUnreadCount }"
    )
    assert snapshot["chatUnreadCount"] == 1
    await gql(server.url, server.token(bob), SEND, {"c": conv, "b": "after"})
    async with ws_connect(server, alice) as ws:
        await ws.next()
        cursor = snapshot["realtimeCursor"]
        await ws.send("session.resume", {"epoch": cursor["epoch"], "lastSeq": cursor["seq"]})
        message = await ws.next_of("chat.message")
        update = await ws.next_of("chat.conversation.updated")
        resumed = await ws.next_of("session.resumed")
    assert message["payload"]["message"]["body"] == "after"
    assert update["payload"]["totalUnread"] == 2
    assert resumed["payload"]["toSeq"] == update["seq"]


async def test_slow_consumer_is_cut_off_with_4008_and_resumes_losslessly(make_server, uid):
    # A socket write blocked past the slow-consumer timeout is a reset (1006,
    # tested apart); here the client reads again only once the flood is sent,
    # which takes longer than the default 5 s on a loaded machine.
    node = make_server("--send-buffer-items", "8", "--slow-consumer-timeout-s", "120")
    alice, bob = uid("alice"), uid("bob")
    conv = await conversation(node, bob, alice)
    body = "x" * 9_000
    async with ws_connect(node, alice, message_queue_size=1) as ws:
        welcome = (await ws.next())["payload"]
        # Stop reading: flood until the server gives up on this connection.
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(400):
                await client.post(
                    f"{node.url}/graphql",
                    headers={"Authorization": f"Bearer {node.token(bob)}"},
                    json={"query": SEND, "variables": {"c": conv, "b": body}},
                )
        code = await ws.closed(timeout=20)
    assert code == 4008
    async with ws_connect(node, alice) as ws:
        await ws.next()
        await ws.send("session.resume", {"epoch": welcome["epoch"], "lastSeq": welcome["seq"]})
        seqs = []
        while True:
            envelope = await ws.next()
            if envelope["type"] == "session.resumed":
                break
            seqs.append(envelope["seq"])
    assert seqs == list(range(welcome["seq"] + 1, welcome["seq"] + 801))


# -- actions -----------------------------------------------------------------------------------


async def test_every_action_gets_one_reply(server, uid):
    alice, bob = uid("alice"), uid("bob")
    conv = await conversation(server, alice, bob)
    async with ws_connect(server, alice) as ws:
        await ws.next()
        pong = await ws.call("ping")
        assert pong["type"] == "ping.pong" and pong["payload"]["serverTime"].endswith("Z")
        assert (await ws.call("notification.subscribe"))["type"] == "ack"
        sub = await ws.call("subscribe", {"topic": f"conversation:{conv}"})
        assert sub["type"] == "ack" and sub["payload"] == {"topic": f"conversation:{conv}"}
        sent = await ws.call(
            "chat.send", {"conversationId": conv, "body": "hi", "clientMessageId": "m1"}
        )
        assert sent["type"] == "ack" and sent["payload"]["message"]["body"] == "hi"
        again = await ws.call(
            "chat.send", {"conversationId": conv, "body": "hi", "clientMessageId": "m1"}
        )
        assert again["payload"]["message"]["id"] == sent["payload"]["message"]["id"]
        read = await ws.call("chat.read", {"conversationId": conv})
        assert read["type"] == "ack" and read["payload"]["conversation"]["id"] == conv
        delivered = await ws.call(
            "chat.delivered",
            {"conversationId": conv, "messageIds": [sent["payload"]["message"]["id"]]},
        )
        assert delivered["type"] == "ack"
        assert (await ws.call("chat.typing", {"conversationId": conv, "state": "started"}))[
            "type"
        ] == "ack"
        assert (await ws.call("chat.typing", {"conversationId": conv, "state": "stopped"}))[
            "type"
        ] == "ack"
        assert (await ws.call("presence.set", {"status": "AWAY"}))["type"] == "ack"
        assert (await ws.call("unsubscribe", {"topic": f"conversation:{conv}"}))["type"] == "ack"
        refreshed = await ws.call("auth.refresh", {"token": server.token(alice, ttl_s=7200)})
        assert refreshed["type"] == "ack" and refreshed["payload"]["expiresAt"].endswith("Z")
        other = await ws.call("auth.refresh", {"token": server.token(bob)})
        assert other["type"] == "error" and other["payload"]["code"] == "UNAUTHORIZED"
    # The idempotent replay appended nothing: one message in the conversation.
    messages = await gql(
        server.url, server.token(bob), f'{{ messages(conversationId: "{conv}") {{ id }} }}'
    )
    assert len(messages["messages"]) == 1


async def test_chat_events_reach_every_participant(server, uid):
    alice, bob = uid("alice"), uid("bob")
    conv = await conversation(server, alice, bob)
    async with ws_connect(server, alice) as wa, ws_connect(server, bob) as wb:
        await wa.next()
        await wb.next()
        sent = await wa.call(
            "chat.send", {"conversationId": conv, "body": "yo", "clientMessageId": "a1"}
        )
        message_id = sent["payload"]["message"]["id"]
        got = await wb.next_of("chat.message")
        validate_event("chat.message", got["payload"])
        update = await wb.next_of("chat.conversation.updated")
        assert (
            update["payload"]["conversation"]["unreadCount"] == 1
            and update["payload"]["totalUnread"] == 1
        )
        await wb.call("chat.delivered", {"conversationId": conv, "messageIds": [message_id]})
        receipt = await wa.next_of("chat.message.delivered")
        assert receipt["payload"]["messageId"] == message_id and receipt["payload"]["userId"] == bob
        await wb.call("chat.read", {"conversationId": conv})
        read = await wa.next_of("chat.read")
        assert read["payload"]["upToMessageId"] == message_id and read["payload"]["userId"] == bob


async def test_foreign_user_refused_on_send_and_subscribe(server, uid):
    alice, bob, mallory = uid("alice"), uid("bob"), uid("mallory")
    conv = await conversation(server, alice, bob)
    async with ws_connect(server, mallory) as ws:
        await ws.next()
        send = await ws.call(
            "chat.send", {"conversationId": conv, "body": "x", "clientMessageId": "z"}
        )
        assert send["type"] == "error" and send["payload"]["code"] == "FORBIDDEN"
        sub = await ws.call("subscribe", {"topic": f"conversation:{conv}"})
        assert sub["type"] == "error" and sub["payload"]["code"] == "FORBIDDEN"
        presence = await ws.call("subscribe", {"topic": f"presence:{alice}"})
        assert presence["payload"]["code"] == "FORBIDDEN"
        missing = await ws.call("chat.read", {"conversationId": "no-such-conversation"})
        assert missing["payload"]["code"] in {"NOT_FOUND", "FORBIDDEN"}
        # The connection is still usable after refusals.
        assert (await ws.call("ping"))["type"] == "ping.pong"


async def test_bad_frames_get_errors_and_keep_the_connection(server, uid):
    async with ws_connect(server, uid("alice")) as ws:
        await ws.next()
        await ws.send_raw("not json")
        error = await ws.next()
        assert error["type"] == "error" and error["payload"]["code"] == "BAD_REQUEST"
        await ws.send_raw(
            json.dumps({"v": 1, "id": "x1", "action": "chat.send", "payload": {"body": 1}})
        )
        error = await ws.next()
        assert error["replyTo"] == "x1" and error["payload"]["code"] == "BAD_REQUEST"
        assert (
            "conversationId" in error["payload"]["message"] or "body" in error["payload"]["message"]
        )
        await ws.send_raw(json.dumps({"v": 1, "id": "x2", "action": "no.such.action"}))
        error = await ws.next()
        assert error["replyTo"] == "x2" and error["payload"]["code"] == "UNKNOWN_ACTION"
        assert (await ws.call("ping"))["type"] == "ping.pong"
        await ws.send_raw(json.dumps({"v": 9, "id": "x3", "action": "ping"}))
        error = await ws.next()
        assert error["replyTo"] == "x3" and error["payload"]["code"] == "UNSUPPORTED_VERSION"
        assert await ws.closed() == 4000


async def test_oversized_frame_closes_1009(server, uid):
    async with ws_connect(server, uid("alice")) as ws:
        await ws.next()
        await ws.send_raw(json.dumps({"v": 1, "action": "ping", "payload": {"pad": "x" * 70_000}}))
        assert await ws.closed() == 1009


async def test_rate_limit_answers_rate_limited(server, uid):
    async with ws_connect(server, uid("alice")) as ws:
        await ws.next()
        ids = [await ws.send("ping") for _ in range(60)]
        replies = [await ws.reply_to(action_id) for action_id in ids]
    limited = [r for r in replies if r["type"] == "error"]
    assert limited, "60 pings at once must exceed the burst of 40"
    assert all(
        r["payload"]["code"] == "RATE_LIMITED" and r["payload"]["retryAfterMs"] > 0 for r in limited
    )
    assert sum(r["type"] == "ping.pong" for r in replies) >= 40


async def test_token_expiry_closes_4001(server, uid):
    alice = uid("alice")
    async with ws_connect(server, alice, token=server.token(alice, ttl_s=2)) as ws:
        await ws.next()
        error = await ws.next_of("error", timeout=10)
        assert error["payload"]["code"] == "TOKEN_EXPIRED"
        assert await ws.closed() == 4001


# -- ephemeral events --------------------------------------------------------------------------


async def test_typing_is_relayed_and_stops_by_itself(server, uid):
    alice, bob = uid("alice"), uid("bob")
    conv = await conversation(server, alice, bob)
    async with ws_connect(server, alice) as wa, ws_connect(server, bob) as wb:
        await wa.next()
        await wb.next()
        await wb.call("subscribe", {"topic": f"conversation:{conv}"})
        await wa.call("subscribe", {"topic": f"conversation:{conv}"})
        await wa.call("chat.typing", {"conversationId": conv, "state": "started"})
        started = await wb.next_of("chat.typing.started")
        assert (
            started["payload"] == {"conversationId": conv, "userId": alice} and "seq" not in started
        )
        with trio.fail_after(9):
            stopped = await wb.next_of("chat.typing.stopped", timeout=9)
        assert stopped["payload"]["userId"] == alice
    # The typist never sees their own typing.
    assert not [e for e in wa.seen if e["type"].startswith("chat.typing")]


async def test_presence_across_two_tabs(server, uid):
    alice, bob = uid("alice"), uid("bob")
    await conversation(server, alice, bob)
    async with ws_connect(server, bob) as watcher:
        await watcher.next()
        assert (await watcher.call("subscribe", {"topic": f"presence:{alice}"}))["type"] == "ack"
        async with ws_connect(server, alice) as tab1:
            await tab1.next()
            online = await watcher.next_of("user.presence.updated")
            assert online["payload"]["status"] == "ONLINE"
            async with ws_connect(server, alice) as tab2:
                await tab2.next()
                await tab2.call("presence.set", {"status": "AWAY"})
            # tab2 closed while tab1 is still ONLINE: alice stays ONLINE, never OFFLINE.
            await tab1.call("presence.set", {"status": "AWAY"})
            away = await watcher.next_of("user.presence.updated")
            assert away["payload"]["status"] == "AWAY"
        offline = await watcher.next_of("user.presence.updated")
        assert offline["payload"]["status"] == "OFFLINE" and offline["payload"]["lastSeenAt"]
    seen = await gql(
        server.url,
        server.token(bob),
        f'{{ presence(userIds: ["{alice}"]) {{ status lastSeenAt }} }}',
    )
    assert seen["presence"][0]["status"] == "OFFLINE" and seen["presence"][0]["lastSeenAt"]


async def test_event_counters_and_system_notice(server, uid):
    host, guest = uid("host"), uid("guest")
    event = (
        await gql(
            server.url,
            server.token(host),
            'mutation{ createEvent(title:"E", startsAt:"2031-01-01T00:00:00.000Z"){ id } }',
        )
    )["createEvent"]
    async with ws_connect(server, guest) as ws:
        await ws.next()
        assert (await ws.call("subscribe", {"topic": f"event:{event['id']}"}))["type"] == "ack"
        await gql(
            server.url,
            server.token(guest),
            "mutation($e:ID!){ setRsvp(eventId:$e, status:GOING){ status } }",
            {"e": event["id"]},
        )
        # The counters (ephemeral, on the topic) and the RSVP (durable, in the
        # stream) come from one mutation in no promised order.
        got = {}
        while len(got) < 2:
            envelope = await ws.next_of("event.counters.updated", "event.rsvp.updated")
            got[envelope["type"]] = envelope
        counters = got["event.counters.updated"]
        assert counters["payload"] == {
            "eventId": event["id"],
            "going": 1,
            "interested": 0,
            "checkedIn": 0,
        }
        rsvp = got["event.rsvp.updated"]
        assert rsvp["payload"]["counts"] == {"going": 1, "interested": 0}
        await gql(
            server.url,
            server.token("ops", admin=True),
            'mutation{ broadcastNotice(text:"deploy at 5", severity:"warning") }',
        )
        notice = await ws.next_of("system.notice")
        assert (
            notice["payload"]["text"] == "deploy at 5"
            and notice["payload"]["severity"] == "warning"
        )


# -- shutdown ----------------------------------------------------------------------------------


async def test_graceful_shutdown_sends_reconnect_then_1012(make_server, uid):
    node = make_server()
    delays = []
    async with ws_connect(node, uid("a")) as first, ws_connect(node, uid("b")) as second:
        await first.next()
        await second.next()
        node.signal(signal.SIGTERM)
        for ws in (first, second):
            hint = await ws.next_of("system.reconnect")
            delays.append(hint["payload"]["retryAfterMs"])
            assert await ws.closed() == 1012
    assert delays[0] != delays[1] and all(d > 0 for d in delays)
    assert node.wait(timeout=20) == 0


async def test_leaving_a_conversation_revokes_the_subscription_at_once(server, uid):
    alice, bob = uid("alice"), uid("bob")
    conv = await conversation(server, alice, bob)
    async with ws_connect(server, alice) as wa, ws_connect(server, bob) as wb:
        await wa.next()
        await wb.next()
        assert (await wb.call("subscribe", {"topic": f"conversation:{conv}"}))["type"] == "ack"
        await gql(
            server.url,
            server.token(bob),
            "mutation($c:ID!){ leaveConversation(conversationId:$c) }",
            {"c": conv},
        )
        revoked = await wb.next_of("subscription.revoked")
        assert revoked["payload"] == {
            "topic": f"conversation:{conv}",
            "reason": "LEFT_CONVERSATION",
        }
        # Typing in the conversation no longer reaches bob, and he cannot subscribe again.
        await wa.call("chat.typing", {"conversationId": conv, "state": "started"})
        again = await wb.call("subscribe", {"topic": f"conversation:{conv}"})
        assert again["type"] == "error" and again["payload"]["code"] == "FORBIDDEN"
        assert (await wb.call("ping"))["type"] == "ping.pong"
    assert not [e for e in wb.seen if e["type"] == "chat.typing.started"]
    update = await gql(
        server.url, server.token(alice), f'{{ conversation(id: "{conv}") {{ participantIds }} }}'
    )
    assert update["conversation"]["participantIds"] == [alice]
