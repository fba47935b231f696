"""The polling path over real HTTP against a `cutover serve` process (PROTOCOL.md section 3)."""

from __future__ import annotations

import httpx

from tests.e2e.client import gql

# Each test runs on one SQLite node and on two PostgreSQL + Redis nodes behind nginx.
ALSO_ON_A_CLUSTER = True

CONVERSATION = (
    "id participantIds unreadCount lastReadMessageId updatedAt lastMessage { id body senderId }"
)


async def test_no_token_and_bad_token_get_401(server):
    async with httpx.AsyncClient(timeout=30) as client:
        bare = await client.post(f"{server.url}/graphql", json={"query": "{ me { id } }"})
        bad = await client.post(
            f"{server.url}/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": "Bearer not-a-jwt"},
        )
        expired = await client.post(
            f"{server.url}/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {server.token('x', ttl_s=-10)}"},
        )
    for response in (bare, bad, expired):
        assert response.status_code == 401
        assert response.json()["error"]["code"] in {"UNAUTHORIZED", "TOKEN_EXPIRED"}
    assert expired.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_introspection_and_me(server, uid):
    alice = uid("alice")
    data = await gql(
        server.url,
        server.token(alice, name="Alice"),
        "{ me { id name } __schema { queryType { name } } }",
    )
    assert data["me"]["id"] == alice
    assert data["__schema"]["queryType"]["name"] == "Query"


async def test_chat_flow_unread_counts_and_idempotent_send(server, uid):
    alice, bob = uid("alice"), uid("bob")
    ta, tb = server.token(alice), server.token(bob)
    conv = (
        await gql(
            server.url,
            ta,
            "mutation($p:[ID!]!){ createConversation(participantIds:$p){ id participantIds } }",
            {"p": [bob]},
        )
    )["createConversation"]
    assert sorted(conv["participantIds"]) == sorted([alice, bob])
    send = "mutation($c:ID!,$b:String!,$k:String){ sendChatMessage(conversationId:$c, body:$b, clientMessageId:$k){ id body clientMessageId } }"
    first = (await gql(server.url, ta, send, {"c": conv["id"], "b": "hi", "k": "k1"}))[
        "sendChatMessage"
    ]
    again = (await gql(server.url, ta, send, {"c": conv["id"], "b": "hi", "k": "k1"}))[
        "sendChatMessage"
    ]
    assert first["id"] == again["id"]
    await gql(server.url, ta, send, {"c": conv["id"], "b": "second", "k": "k2"})
    data = await gql(
        server.url,
        tb,
        f'{{ chatUnreadCount conversations {{ {CONVERSATION} }} messages(conversationId: "{conv["id"]}") {{ id body }} }}',
    )
    assert data["chatUnreadCount"] == 2
    assert data["conversations"][0]["unreadCount"] == 2
    assert [m["body"] for m in data["messages"]] == ["hi", "second"]
    read = await gql(
        server.url,
        tb,
        "mutation($c:ID!){ markConversationRead(conversationId:$c){ unreadCount lastReadMessageId } }",
        {"c": conv["id"]},
    )
    assert read["markConversationRead"]["unreadCount"] == 0
    assert (await gql(server.url, tb, "{ chatUnreadCount }"))["chatUnreadCount"] == 0
    # The sender's own messages never count as unread for the sender.
    assert (await gql(server.url, ta, "{ chatUnreadCount }"))["chatUnreadCount"] == 0


async def test_foreign_conversation_is_refused(server, uid):
    alice, bob, mallory = uid("alice"), uid("bob"), uid("mallory")
    conv = (
        await gql(
            server.url,
            server.token(alice),
            "mutation($p:[ID!]!){ createConversation(participantIds:$p){ id } }",
            {"p": [bob]},
        )
    )["createConversation"]
    tm = server.token(mallory)
    body = await gql(
        server.url,
        tm,
        'mutation($c:ID!){ sendChatMessage(conversationId:$c, body:"x"){ id } }',
        {"c": conv["id"]},
        expect_errors=True,
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(
        server.url,
        tm,
        "query($c:ID!){ messages(conversationId:$c){ id } }",
        {"c": conv["id"]},
        expect_errors=True,
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(
        server.url,
        tm,
        'mutation{ markConversationRead(conversationId:"nope"){ id } }',
        expect_errors=True,
    )
    assert body["errors"][0]["extensions"]["code"] in {"NOT_FOUND", "FORBIDDEN"}


async def test_notifications_admin_only_and_read(server, uid):
    alice = uid("alice")
    create = 'mutation($u:ID!){ createNotification(userId:$u, kind:"NOTE", text:"hello"){ id kind text readAt } }'
    refused = await gql(server.url, server.token(alice), create, {"u": alice}, expect_errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    admin = server.token("ops", admin=True)
    note = (await gql(server.url, admin, create, {"u": alice}))["createNotification"]
    await gql(server.url, admin, create, {"u": alice})
    ta = server.token(alice)
    page = await gql(
        server.url,
        ta,
        "{ unreadNotificationCount notifications(first: 1) { items { id } nextCursor unreadCount } }",
    )
    assert page["unreadNotificationCount"] == 2
    assert len(page["notifications"]["items"]) == 1 and page["notifications"]["nextCursor"]
    rest = await gql(
        server.url,
        ta,
        "query($a:String){ notifications(first: 5, after: $a) { items { id } nextCursor } }",
        {"a": page["notifications"]["nextCursor"]},
    )
    assert len(rest["notifications"]["items"]) == 1
    left = await gql(
        server.url, ta, "mutation($i:[ID!]){ markNotificationsRead(ids:$i) }", {"i": [note["id"]]}
    )
    assert left["markNotificationsRead"] == 1
    none = await gql(server.url, ta, "mutation{ markNotificationsRead(all: true) }")
    assert none["markNotificationsRead"] == 0


async def test_follow_requests_notify_both_ways(server, uid):
    alice, bob = uid("alice"), uid("bob")
    ta, tb = server.token(alice), server.token(bob)
    request = (
        await gql(
            server.url,
            ta,
            "mutation($u:ID!){ requestFollow(userId:$u){ id status fromUserId toUserId } }",
            {"u": bob},
        )
    )["requestFollow"]
    assert request["status"] == "PENDING"
    inbox = await gql(server.url, tb, "{ followRequests { id } notifications { items { kind } } }")
    assert [r["id"] for r in inbox["followRequests"]] == [request["id"]]
    assert "FOLLOW_REQUEST" in [n["kind"] for n in inbox["notifications"]["items"]]
    sent = await gql(server.url, ta, "{ sentFollowRequests { id status } }")
    assert sent["sentFollowRequests"][0]["id"] == request["id"]
    refused = await gql(
        server.url,
        ta,
        "mutation($i:ID!){ respondFollowRequest(id:$i, accept:true){ id } }",
        {"i": request["id"]},
        expect_errors=True,
    )
    assert refused["errors"][0]["extensions"]["code"] in {"FORBIDDEN", "NOT_FOUND"}
    accepted = await gql(
        server.url,
        tb,
        "mutation($i:ID!){ respondFollowRequest(id:$i, accept:true){ status } }",
        {"i": request["id"]},
    )
    assert accepted["respondFollowRequest"]["status"] == "ACCEPTED"
    kinds = await gql(server.url, ta, "{ notifications { items { kind } } }")
    assert "FOLLOW_ACCEPTED" in [n["kind"] for n in kinds["notifications"]["items"]]
    assert (await gql(server.url, tb, "{ followRequests { id } }"))["followRequests"] == []


async def test_events_rsvps_checkins_and_saved(server, uid):
    host, guest, other = uid("host"), uid("guest"), uid("other")
    th, tg = server.token(host), server.token(guest)
    event = (
        await gql(
            server.url,
            th,
            'mutation{ createEvent(title:"Party", startsAt:"2030-01-01T20:00:00.000Z"){ id hostId startsAt rsvpCounts { going interested } } }',
        )
    )["createEvent"]
    assert event["startsAt"] == "2030-01-01T20:00:00.000Z"
    rsvp = (
        await gql(
            server.url,
            tg,
            "mutation($e:ID!){ setRsvp(eventId:$e, status:GOING){ status event { rsvpCounts { going } attendeesPreview viewerRsvp } } }",
            {"e": event["id"]},
        )
    )["setRsvp"]
    assert rsvp["status"] == "GOING"
    assert rsvp["event"]["rsvpCounts"]["going"] == 1 and rsvp["event"]["viewerRsvp"] == "GOING"
    assert guest in rsvp["event"]["attendeesPreview"]
    upcoming = await gql(server.url, tg, "{ myUpcomingRsvps { eventId status } }")
    assert upcoming["myUpcomingRsvps"][0]["eventId"] == event["id"]
    refused = await gql(
        server.url,
        tg,
        "mutation($e:ID!,$u:ID!){ checkIn(eventId:$e, userId:$u){ id } }",
        {"e": event["id"], "u": guest},
        expect_errors=True,
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    checked = await gql(
        server.url,
        th,
        "mutation($e:ID!,$u:ID!){ checkIn(eventId:$e, userId:$u){ checkedInCount } }",
        {"e": event["id"], "u": guest},
    )
    assert checked["checkIn"]["checkedInCount"] == 1
    saved = await gql(
        server.url,
        server.token(other),
        "mutation($e:ID!){ setEventSaved(eventId:$e, saved:true){ viewerSaved } }",
        {"e": event["id"]},
    )
    assert saved["setEventSaved"]["viewerSaved"] is True
    listed = await gql(server.url, server.token(other), "{ savedEvents { id } }")
    assert [e["id"] for e in listed["savedEvents"]] == [event["id"]]


async def test_organizations_roles_announcements_and_notifications(server, uid):
    owner, member, outsider = uid("owner"), uid("member"), uid("outsider")
    to, tm = server.token(owner), server.token(member)
    org = (
        await gql(
            server.url,
            to,
            'mutation{ createOrganization(name:"Club"){ id viewerRole members { userId role } } }',
        )
    )["createOrganization"]
    assert org["viewerRole"] == "OWNER"
    await gql(
        server.url,
        to,
        "mutation($o:ID!,$u:ID!){ setMemberRole(orgId:$o, userId:$u, role:MEMBER){ id } }",
        {"o": org["id"], "u": member},
    )
    refused = await gql(
        server.url,
        tm,
        "mutation($o:ID!,$u:ID!){ setMemberRole(orgId:$o, userId:$u, role:ADMIN){ id } }",
        {"o": org["id"], "u": outsider},
        expect_errors=True,
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    refused = await gql(
        server.url,
        tm,
        'mutation($o:ID!){ postAnnouncement(orgId:$o, title:"t", body:"b"){ id } }',
        {"o": org["id"]},
        expect_errors=True,
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    await gql(
        server.url,
        to,
        'mutation($o:ID!){ postAnnouncement(orgId:$o, title:"Hello", body:"b"){ id } }',
        {"o": org["id"]},
    )
    seen = await gql(
        server.url,
        tm,
        "query($o:ID!){ organization(id:$o){ viewerRole } announcements(orgId:$o){ title } notifications { items { kind } } }",
        {"o": org["id"]},
    )
    assert seen["organization"]["viewerRole"] == "MEMBER"
    assert [a["title"] for a in seen["announcements"]] == ["Hello"]
    kinds = [n["kind"] for n in seen["notifications"]["items"]]
    assert "ROLE_CHANGED" in kinds and "ANNOUNCEMENT" in kinds
    removed = await gql(
        server.url,
        to,
        "mutation($o:ID!,$u:ID!){ setMemberRole(orgId:$o, userId:$u, role:null){ members { userId } } }",
        {"o": org["id"], "u": member},
    )
    assert member not in [m["userId"] for m in removed["setMemberRole"]["members"]]


async def test_feed_presence_and_broadcast(server, uid):
    author, follower = uid("author"), uid("follower")
    ta, tf = server.token(author), server.token(follower)
    request = (
        await gql(
            server.url, tf, "mutation($u:ID!){ requestFollow(userId:$u){ id } }", {"u": author}
        )
    )["requestFollow"]
    await gql(
        server.url,
        ta,
        "mutation($i:ID!){ respondFollowRequest(id:$i, accept:true){ id } }",
        {"i": request["id"]},
    )
    await gql(server.url, ta, 'mutation{ postFeedItem(text:"shipped"){ id } }')
    feed = await gql(
        server.url, tf, '{ feed { authorId text } presence(userIds: ["nobody"]) { userId status } }'
    )
    assert {"authorId": author, "text": "shipped"} in feed["feed"]
    assert feed["presence"][0]["status"] == "OFFLINE"
    refused = await gql(
        server.url, ta, 'mutation{ broadcastNotice(text:"hi") }', expect_errors=True
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    ok = await gql(
        server.url,
        server.token("ops", admin=True),
        'mutation{ broadcastNotice(text:"maintenance", severity:"warning") }',
    )
    assert ok["broadcastNotice"] is True


async def test_realtime_cursor_and_config(server, uid):
    alice = uid("alice")
    ta = server.token(alice)
    before = (await gql(server.url, ta, "{ realtimeCursor { epoch seq } }"))["realtimeCursor"]
    await gql(
        server.url,
        server.token("ops", admin=True),
        'mutation($u:ID!){ createNotification(userId:$u, kind:"K", text:"t"){ id } }',
        {"u": alice},
    )
    data = await gql(
        server.url,
        ta,
        "{ unreadNotificationCount realtimeCursor { epoch seq } realtimeConfig { websocketUrl domains { domain stage pollIntervalMs } } }",
    )
    assert data["realtimeCursor"]["epoch"] == before["epoch"]
    assert data["realtimeCursor"]["seq"] == before["seq"] + 1
    assert data["unreadNotificationCount"] == 1
    domains = {d["domain"] for d in data["realtimeConfig"]["domains"]}
    assert domains == {
        "notification",
        "chat",
        "follow",
        "event",
        "organization",
        "activity",
        "presence",
    }
    assert data["realtimeConfig"]["websocketUrl"].endswith("/ws")


async def test_health_ready_schema_and_metrics(server):
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(f"{server.url}/healthz")).status_code == 200
        ready = await client.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        schema = (await client.get(f"{server.url}/contracts/schema.json")).json()
        assert "$defs" in schema
        metrics = (await client.get(f"{server.url}/metrics")).text
        assert "cutover_connections_active" in metrics
        assert "cutover_poll_requests" in metrics


async def test_tenants_never_reach_each_other(server, uid):
    alice, bob = uid("alice"), uid("bob")
    acme_alice = server.token(alice, tenant="acme")
    me = await gql(server.url, acme_alice, "{ me { id } }")
    assert me["me"]["id"] == f"acme/{alice}"
    conv = await gql(
        server.url,
        acme_alice,
        "mutation($p:[ID!]!){ createConversation(participantIds:$p){ id participantIds } }",
        {"p": [bob]},
    )
    assert sorted(conv["createConversation"]["participantIds"]) == sorted(
        [f"acme/{alice}", f"acme/{bob}"]
    )
    # The untenanted bob and globex's bob are other people: neither sees acme's conversation.
    for token in (server.token(bob), server.token(bob, tenant="globex")):
        assert (await gql(server.url, token, "{ conversations { id } }"))["conversations"] == []
    assert (
        len(
            (await gql(server.url, server.token(bob, tenant="acme"), "{ conversations { id } }"))[
                "conversations"
            ]
        )
        == 1
    )
    foreign = await gql(
        server.url,
        acme_alice,
        "mutation($u:ID!){ requestFollow(userId:$u){ id } }",
        {"u": f"globex/{bob}"},
        expect_errors=True,
    )
    assert foreign["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    reach_in = await gql(
        server.url,
        server.token(bob),
        "mutation($u:ID!){ requestFollow(userId:$u){ id } }",
        {"u": f"acme/{alice}"},
        expect_errors=True,
    )
    assert reach_in["errors"][0]["extensions"]["code"] == "FORBIDDEN"
