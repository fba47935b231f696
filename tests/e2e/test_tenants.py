"""Tenants against a real `cutover serve`: notices stay in their tenant (the
operator's reach everyone), and no id of one tenant reaches another's users."""

from __future__ import annotations

import argparse
import io
from contextlib import AsyncExitStack

import trio

from ops.operator import add_ops_arguments, run_ops
from tests.e2e.client import gql, ws_connect

# Each test runs on one SQLite node and on two PostgreSQL + Redis nodes behind nginx.
ALSO_ON_A_CLUSTER = True

NOTICE = "mutation($t:String!){ broadcastNotice(text:$t) }"
EVENT = "{ id title hostId rsvpCounts { going interested } }"


def ops(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_ops_arguments(parser)
    out = io.StringIO()
    return run_ops(parser.parse_args(list(argv)), out), out.getvalue()


def code(body: dict) -> str:
    return body["errors"][0]["extensions"]["code"]


async def connect_all(stack: AsyncExitStack, server, tokens: dict[str, str]) -> dict:
    clients = {}
    for name, token in tokens.items():
        clients[name] = await stack.enter_async_context(ws_connect(server, name, token=token))
        assert (await clients[name].next())["type"] == "session.welcome"
    return clients


async def test_a_tenant_admins_notice_reaches_only_its_tenant(server, uid):
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    tokens = {
        "acme alice": server.token(alice, tenant="acme"),
        "acme bob": server.token(bob, tenant="acme"),
        "globex bob": server.token(bob, tenant="globex"),
        "bob outside any tenant": server.token(bob),
        "carol outside any tenant": server.token(carol),
    }
    async with AsyncExitStack() as stack:
        clients = await connect_all(stack, server, tokens)
        acme_admin = server.token(uid("ops"), tenant="acme", admin=True)
        assert (await gql(server.url, acme_admin, NOTICE, {"t": "acme only"}))["broadcastNotice"]
        # The operator (an admin outside any tenant) reaches everyone, through `cutover ops notice`.
        operator = server.token(uid("ops"), admin=True)
        sent, _ = await trio.to_thread.run_sync(
            ops, "notice", "--url", server.url, "--token", operator, "everyone"
        )
        assert sent == 0
        # Each connection sees its notices in the order they were sent, so the
        # first one outside acme is the operator's: acme's never reached them.
        for name, client in clients.items():
            first = await client.next_of("system.notice")
            if name.startswith("acme"):
                assert first["payload"]["text"] == "acme only", name
                first = await client.next_of("system.notice")
            assert first["payload"]["text"] == "everyone", name


async def test_a_tenant_admins_ops_notice_stays_in_its_tenant(server, uid):
    tokens = {
        "acme": server.token(uid("a"), tenant="acme"),
        "globex": server.token(uid("g"), tenant="globex"),
        "none": server.token(uid("n")),
    }
    async with AsyncExitStack() as stack:
        clients = await connect_all(stack, server, tokens)
        globex_admin = server.token(uid("ops"), tenant="globex", admin=True)
        sent, _ = await trio.to_thread.run_sync(
            ops, "notice", "--url", server.url, "--token", globex_admin, "globex only"
        )
        assert sent == 0
        operator = server.token(uid("ops"), admin=True)
        await gql(server.url, operator, NOTICE, {"t": "everyone"})
        texts = {}
        for name, client in clients.items():
            texts[name] = [(await client.next_of("system.notice"))["payload"]["text"]]
            if texts[name] == ["globex only"]:
                texts[name].append((await client.next_of("system.notice"))["payload"]["text"])
        assert texts == {
            "acme": ["everyone"],
            "globex": ["globex only", "everyone"],
            "none": ["everyone"],
        }


async def test_another_tenants_event_cannot_be_read_rsvped_or_watched(server, uid):
    alice, bob = uid("alice"), uid("bob")
    acme_alice = server.token(alice, tenant="acme")
    acme_bob = server.token(bob, tenant="acme")
    event = (
        await gql(
            server.url,
            acme_alice,
            f'mutation{{ createEvent(title:"Acme party", startsAt:"2027-03-01T18:00:00Z") {EVENT} }}',
        )
    )["createEvent"]
    assert event["id"].startswith("acme/") and event["hostId"] == f"acme/{alice}"
    read = f"query($e:ID!){{ event(id:$e) {EVENT} }}"
    rsvp = "mutation($e:ID!){ setRsvp(eventId:$e, status:GOING){ status } }"
    save = "mutation($e:ID!){ setEventSaved(eventId:$e, saved:true){ id } }"
    outsiders = {"globex": server.token(bob, tenant="globex"), "none": server.token(bob)}
    for name, token in outsiders.items():
        assert (await gql(server.url, token, read, {"e": event["id"]}))["event"] is None, name
        for mutation in (rsvp, save):
            refused = await gql(server.url, token, mutation, {"e": event["id"]}, expect_errors=True)
            assert code(refused) == "NOT_FOUND", (name, mutation)
            unknown = await gql(server.url, token, mutation, {"e": "gth_nope"}, expect_errors=True)
            assert code(unknown) == "NOT_FOUND"
        async with ws_connect(server, name, token=token) as ws:
            await ws.next()
            foreign = await ws.call("subscribe", {"topic": f"event:{event['id']}"})
            unknown = await ws.call("subscribe", {"topic": "event:gth_nope"})
            # Refused exactly like an event that does not exist.
            assert foreign["type"] == unknown["type"] == "error"
            assert foreign["payload"]["code"] == unknown["payload"]["code"] == "FORBIDDEN"
            assert (await ws.call("ping"))["type"] == "ping.pong"

    # Inside acme the event is anyone's: read, RSVP and watch its counters.
    assert (await gql(server.url, acme_bob, read, {"e": event["id"]}))["event"]["rsvpCounts"] == {
        "going": 0,
        "interested": 0,
    }
    async with ws_connect(server, bob, token=acme_bob) as ws:
        await ws.next()
        ack = await ws.call("subscribe", {"topic": f"event:{event['id']}"})
        assert ack["type"] == "ack" and ack["payload"]["topic"] == f"event:{event['id']}"
        assert (await gql(server.url, acme_bob, rsvp, {"e": event["id"]}))["setRsvp"] == {
            "status": "GOING"
        }
        counters = await ws.next_of("event.counters.updated")
        assert counters["payload"]["eventId"] == event["id"] and counters["payload"]["going"] == 1


async def test_another_tenants_conversation_and_organization_are_not_found(server, uid):
    alice, bob = uid("alice"), uid("bob")
    acme_alice = server.token(alice, tenant="acme")
    conversation = (
        await gql(
            server.url,
            acme_alice,
            "mutation($p:[ID!]!){ createConversation(participantIds:$p){ id } }",
            {"p": [bob]},
        )
    )["createConversation"]["id"]
    org = (await gql(server.url, acme_alice, 'mutation{ createOrganization(name:"Acme"){ id } }'))[
        "createOrganization"
    ]["id"]
    assert conversation.startswith("acme/") and org.startswith("acme/")
    for token in (server.token(bob, tenant="globex"), server.token(bob)):
        for query, variables in (
            ("query($c:ID!){ conversation(id:$c){ id } }", {"c": conversation}),
            ("query($c:ID!){ messages(conversationId:$c){ id } }", {"c": conversation}),
            (
                'mutation($c:ID!){ sendChatMessage(conversationId:$c, body:"hi"){ id } }',
                {"c": conversation},
            ),
            ("query($o:ID!){ organization(id:$o){ id } }", {"o": org}),
            (
                'mutation($o:ID!){ postAnnouncement(orgId:$o, title:"t", body:"b"){ id } }',
                {"o": org},
            ),
        ):
            body = await gql(server.url, token, query, variables, expect_errors=True)
            assert code(body) == "NOT_FOUND", query
        async with ws_connect(server, bob, token=token) as ws:
            await ws.next()
            send = await ws.call(
                "chat.send", {"conversationId": conversation, "body": "x", "clientMessageId": "k"}
            )
            assert send["type"] == "error" and send["payload"]["code"] == "NOT_FOUND"
            sub = await ws.call("subscribe", {"topic": f"conversation:{conversation}"})
            assert sub["type"] == "error" and sub["payload"]["code"] == "FORBIDDEN"
