"""The store contract for the domain's records: inserts, lookups, ordering and paging."""

from __future__ import annotations


def test_notifications_order_page_and_read(store):
    with store.transaction() as tx:
        rows = [
            tx.insert_notification(
                {"id": f"n{i}", "user_id": "u", "kind": "K", "text": "t", "created_at": "x"}
            )
            for i in range(4)
        ]
    assert [r["pos"] for r in rows] == sorted(r["pos"] for r in rows)
    with store.snapshot() as tx:
        assert [r["id"] for r in tx.list_notifications("u", 2)] == ["n3", "n2"]
        assert [r["id"] for r in tx.list_notifications("u", 5, rows[2]["pos"])] == ["n1", "n0"]
        assert tx.count_unread_notifications("u") == 4
    with store.transaction() as tx:
        assert tx.mark_notifications_read("u", ["n0", "n0", "other"], "t1") == 1
        assert tx.mark_notifications_read("someone-else", None, "t1") == 0
        assert tx.mark_notifications_read("u", None, "t2") == 3
        assert tx.count_unread_notifications("u") == 0


def test_conversations_messages_and_read_state(store):
    with store.transaction() as tx:
        tx.insert_conversation(
            {"id": "c1", "created_at": "a", "updated_at": "a", "last_message_id": None}, ["x", "y"]
        )
        tx.insert_conversation(
            {"id": "c2", "created_at": "b", "updated_at": "b", "last_message_id": None}, ["x", "z"]
        )
        m1 = tx.insert_message(
            {"id": "m1", "conversation_id": "c1", "sender_id": "y", "body": "hi", "created_at": "c"}
        )
        m2 = tx.insert_message(
            {
                "id": "m2",
                "conversation_id": "c1",
                "sender_id": "x",
                "body": "yo",
                "created_at": "d",
                "client_message_id": "k",
            }
        )
        tx.touch_conversation("c1", "d", "m2")
        tx.put_read_state("c1", "x", "m1", m1["pos"], "e")
    with store.snapshot() as tx:
        assert [c["id"] for c in tx.conversations_of("x")] == ["c1", "c2"]
        assert [c["id"] for c in tx.conversations_of("x", 1)] == ["c1"]
        assert tx.list_participants("c1") == ["x", "y"]
        assert tx.is_participant("c1", "y") and not tx.is_participant("c1", "z")
        assert tx.share_conversation("y", "x") and not tx.share_conversation("y", "z")
        assert tx.find_message_by_client_id("x", "k")["id"] == "m2"
        assert tx.find_message_by_client_id("y", "k") is None
        assert [m["id"] for m in tx.list_messages("c1", 10)] == ["m2", "m1"]
        assert [m["id"] for m in tx.list_messages("c1", 10, m2["pos"])] == ["m1"]
        assert tx.last_message("c1")["id"] == "m2"
        assert tx.count_messages_after("c1", 0, "x") == 1
        assert tx.count_messages_after("c1", m1["pos"], "y") == 1
        assert tx.get_read_state("c1", "x")["message_id"] == "m1"
    with store.transaction() as tx:
        assert tx.insert_delivery("m1", "x", "f") is True
        assert tx.insert_delivery("m1", "x", "g") is False
        assert [d["user_id"] for d in tx.list_deliveries(["m1", "m2"])] == ["x"]


def test_memberships_rsvps_saved_presence(store):
    with store.transaction() as tx:
        tx.insert_organization({"id": "o", "name": "Org", "created_at": "a"})
        tx.put_membership("o", "b", "MEMBER", "t")
        tx.put_membership("o", "a", "OWNER", "t")
        tx.put_membership("o", "b", "ADMIN", "t2")
        tx.insert_gathering(
            {"id": "g", "title": "G", "host_id": "a", "starts_at": "s", "created_at": "c"}
        )
        for user in ("u2", "u1", "u3"):
            tx.put_rsvp({"event_id": "g", "user_id": user, "status": "GOING", "updated_at": "t"})
        tx.put_rsvp({"event_id": "g", "user_id": "u3", "status": "INTERESTED", "updated_at": "t"})
        assert tx.set_saved("g", "u1", True, "t") and not tx.set_saved("g", "u1", True, "t")
        tx.put_presence("u1", "AWAY", "t")
        tx.put_presence("u1", "ONLINE", "t2")
    with store.snapshot() as tx:
        assert [(m["user_id"], m["role"]) for m in tx.list_memberships("o")] == [
            ("b", "ADMIN"),
            ("a", "OWNER"),
        ]
        assert tx.count_rsvps("g") == {"GOING": 2, "INTERESTED": 1}
        assert tx.rsvp_user_ids("g", "GOING", 5) == ["u2", "u1"]
        assert tx.saved_event_ids("u1") == ["g"]
        assert tx.get_presences(["u1", "nobody"]) == [
            {"user_id": "u1", "status": "ONLINE", "last_seen_at": "t2"}
        ]
    with store.transaction() as tx:
        assert tx.delete_membership("o", "b") and not tx.delete_membership("o", "b")
        assert tx.set_saved("g", "u1", False, "t") and tx.saved_event_ids("u1") == []
