"""The polling path's limits against a real `cutover serve` over real sockets.

Query bombs are refused before they run and name the limit; one user's bombs
leave another user's latency alone; memory stays bounded after many large
distinct queries and large unauthenticated bodies; unauthenticated POSTs are
refused before their body is read and a keep-alive client stays in step; the
GraphQL-over-HTTP statuses clients expect (checked with the `gql` client); every
HTTP error in the contract's JSON shape. Timings are printed, never asserted.
"""

from __future__ import annotations

import statistics
import time

import httpx
import psutil
import pytest
import trio
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError, TransportServerError
from gql.transport.httpx import HTTPXTransport

from tests.e2e.client import gql

pytestmark = pytest.mark.e2e

POLL = "{ unreadNotificationCount conversations { id unreadCount lastMessage { id body } } }"
# The most a request may cost: 19 x (1 + 50 x 5) = 4,769 of the 5,000 allowed.
HEAVIEST = (
    "{ "
    + " ".join(
        f"a{i}: conversations(first: 50) {{ id unreadCount lastMessage {{ id body }} }}"
        for i in range(19)
    )
    + " }"
)
BOMBS = {
    "aliases (100 x chatUnreadCount)": (
        "{ " + " ".join(f"a{i}: chatUnreadCount" for i in range(100)) + " }",
        "aliases",
    ),
    "aliases (1,000 x conversations(first: 50))": (
        "{ " + " ".join(f"a{i}: conversations(first: 50) {{ id }}" for i in range(1000)) + " }",
        "tokens",
    ),
    "duplicate fields (20,000 x id)": ("{ me { " + "id " * 20_000 + "} }", "tokens"),
    "duplicate fields (1,500 x id)": ("{ me { " + "id " * 1_500 + "} }", "repeats"),
    "duplicate fields (400 x me { id })": ("{ " + "me { id } " * 400 + "}", "repeats"),
    "tokens (10,000 comments)": ("{ me { id } }\n" + "#\n" * 10_000, "tokens"),
    "depth (150 levels)": ("{ me " + "{ id " * 150 + "}" * 150 + " }", "depth"),
    "cost (20 x conversations(first: 200))": (
        "{ "
        + " ".join(
            f"a{i}: conversations(first: 200) {{ id lastMessage {{ id body }} }}" for i in range(20)
        )
        + " }",
        "cost",
    ),
    "size (100 KB document)": ("{ me { id } }" + " " * 100_000, "bytes"),
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def test_bombs_are_refused_before_they_run_naming_the_limit(server, uid):
    token = server.token(uid("bomber"))
    rows = []
    async with httpx.AsyncClient(timeout=30) as client:
        for name, (query, limit) in BOMBS.items():
            started = time.perf_counter()
            response = await client.post(
                f"{server.url}/graphql", json={"query": query}, headers=_bearer(token)
            )
            elapsed = time.perf_counter() - started
            body = response.json()
            assert response.status_code == 400, (name, body)
            assert "data" not in body
            [error] = body["errors"]
            assert error["extensions"]["code"] == "BAD_REQUEST"
            assert error["extensions"]["limit"]["name"] == limit, (name, error)
            maximum = error["extensions"]["limit"]["max"]
            assert f"over the limit of {maximum:,}" in error["message"]
            rows.append((name, len(query), elapsed, error["message"]))
    print()
    for name, size, elapsed, message in rows:
        print(f"{name:44s} {size:7,d} B  refused in {elapsed * 1000:6.1f} ms: {message}")


async def test_one_users_bombs_leave_another_users_latency_alone(server, uid):
    bomber, innocent = uid("bomber"), uid("innocent")
    tb, ti = server.token(bomber), server.token(innocent)
    for i in range(20):
        conv = await gql(
            server.url,
            tb,
            "mutation($p: [ID!]!) { createConversation(participantIds: $p) { id } }",
            {"p": [f"{bomber}-peer{i}"]},
        )
        await gql(
            server.url,
            tb,
            'mutation($c: ID!) { sendChatMessage(conversationId: $c, body: "hi") { id } }',
            {"c": conv["createConversation"]["id"]},
        )
    assert len((await gql(server.url, tb, HEAVIEST))["a0"]) == 20

    async def poll(client: httpx.AsyncClient, n: int) -> list[float]:
        latencies = []
        for _ in range(n):
            started = time.perf_counter()
            response = await client.post(
                f"{server.url}/graphql", json={"query": POLL}, headers=_bearer(ti)
            )
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200 and "errors" not in response.json()
        return latencies

    bombs: list[tuple[str, float, int]] = []
    done = trio.Event()

    async def bomb_loop(k: int) -> None:
        queries = [("heaviest allowed", HEAVIEST)] + [
            (name, query) for name, (query, _limit) in BOMBS.items()
        ]
        async with httpx.AsyncClient(timeout=60) as client:
            i = k
            while not done.is_set():
                name, query = queries[i % len(queries)] if i % 2 else queries[0]
                started = time.perf_counter()
                response = await client.post(
                    f"{server.url}/graphql", json={"query": query}, headers=_bearer(tb)
                )
                bombs.append((name, time.perf_counter() - started, response.status_code))
                i += 1

    with trio.fail_after(120):
        async with httpx.AsyncClient(timeout=60) as client:
            await poll(client, 5)  # warm
            quiet = await poll(client, 40)
            async with trio.open_nursery() as nursery:
                for k in range(4):
                    nursery.start_soon(bomb_loop, k)
                while len(bombs) < 4:
                    await trio.sleep(0.01)  # every bomber has a request in flight
                loud = await poll(client, 40)
                while len(bombs) < 40:
                    loud += await poll(client, 5)
                done.set()
    heavy = [elapsed for name, elapsed, _ in bombs if name == "heaviest allowed"]
    refused = [elapsed for name, elapsed, status in bombs if status == 400]
    print(
        f"\ninnocent polls, quiet:          p50 {statistics.median(quiet) * 1000:6.1f} ms"
        f"  p99 {_p(quiet, 0.99) * 1000:6.1f} ms"
        f"\ninnocent polls, 4 bombs flying: p50 {statistics.median(loud) * 1000:6.1f} ms"
        f"  p99 {_p(loud, 0.99) * 1000:6.1f} ms"
        f"\nbomber: {len(heavy)} heaviest allowed queries, median "
        f"{statistics.median(heavy) * 1000:.0f} ms, max {max(heavy) * 1000:.0f} ms; "
        f"{len(refused)} bombs refused, median {statistics.median(refused) * 1000:.0f} ms"
    )
    assert heavy and refused
    assert all(status in (200, 400, 429) for _, _, status in bombs)


async def test_a_request_past_its_time_limit_ends_with_an_error_per_field(make_server, uid):
    node = make_server("--graphql-timeout-s", "0.000001")
    body = await gql(
        node.url,
        node.token(uid("slow")),
        '{ a: event(id: "x") { id } b: event(id: "y") { id } }',
        expect_errors=True,
    )
    assert body["status"] == 200
    assert body["data"] == {"a": None, "b": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["TIMEOUT", "TIMEOUT"]
    assert sorted(e["path"] for e in body["errors"]) == [["a"], ["b"]]


async def test_execution_errors_answer_200_with_data_and_errors(server, uid):
    token = server.token(uid("alice"))
    nullable = await gql(
        server.url, token, '{ me { id } conversation(id: "nope") { id } }', expect_errors=True
    )
    assert nullable["status"] == 200 and nullable["data"]["conversation"] is None
    assert nullable["data"]["me"]["id"].startswith("alice")
    assert nullable["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    non_null = await gql(
        server.url, token, '{ messages(conversationId: "nope") { id } }', expect_errors=True
    )
    assert non_null["status"] == 200 and non_null["data"] is None
    assert non_null["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert non_null["errors"][0]["path"] == ["messages"]


async def test_bad_variables_are_bad_requests_naming_the_variable(server, uid):
    token = server.token(uid("alice"))
    cases = [
        ("query($first: Int) { conversations(first: $first) { id } }", {"first": "ten"}),
        ("query($ids: [ID!]!) { presence(userIds: $ids) { userId } }", {}),
        ("query($ids: [ID!]!) { presence(userIds: $ids) { userId } }", {"ids": ["a", None]}),
    ]
    paths = []
    for query, variables in cases:
        body = await gql(server.url, token, query, variables, expect_errors=True)
        assert body["status"] == 400 and "data" not in body, body
        assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        paths.append(body["errors"][0]["extensions"]["path"])
    assert paths == ["variables.first", "variables.ids", "variables.ids[1]"]


async def test_every_http_error_is_json_in_the_contract_shape(server, uid):
    token = server.token(uid("alice"))
    async with httpx.AsyncClient(timeout=30) as client:
        answers = {
            "404": await client.get(f"{server.url}/no/such/endpoint"),
            "405": await client.get(f"{server.url}/graphql"),
            "405 put": await client.put(f"{server.url}/healthz"),
            "not JSON": await client.post(
                f"{server.url}/graphql", content=b"{nope", headers=_bearer(token)
            ),
            "nested JSON": await client.post(
                f"{server.url}/graphql", content=b"[" * 100_000, headers=_bearer(token)
            ),
            "413 declared": await client.post(
                f"{server.url}/graphql", content=b"x" * 1_000_000, headers=_bearer(token)
            ),
            "413 chunked": await client.post(
                f"{server.url}/graphql",
                content=_chunks(b"x" * 65_536, 20),
                headers=_bearer(token),
            ),
            "401": await client.post(f"{server.url}/graphql", json={"query": "{ me { id } }"}),
        }
    expected = {
        "404": (404, "NOT_FOUND"),
        "405": (405, "BAD_REQUEST"),
        "405 put": (405, "BAD_REQUEST"),
        "not JSON": (400, "BAD_REQUEST"),
        "nested JSON": (400, "BAD_REQUEST"),
        "413 declared": (413, "PAYLOAD_TOO_LARGE"),
        "413 chunked": (413, "PAYLOAD_TOO_LARGE"),
        "401": (401, "UNAUTHORIZED"),
    }
    for name, response in answers.items():
        assert response.headers["content-type"].startswith("application/json"), name
        error = response.json()["error"]
        assert (response.status_code, error["code"]) == expected[name], (name, error)
        assert error["message"]
    assert "131,072" in answers["413 declared"].json()["error"]["message"]
    assert answers["413 chunked"].headers["connection"] == "close"


async def _chunks(chunk: bytes, n: int):
    for _ in range(n):
        yield chunk


async def _raw_request(url: str, head: str) -> tuple[int, dict[str, str], bytes]:
    """Send a request head and no body; read the response (it must come without the body)."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head.encode())
        data = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65_536)
            head_bytes, _, body = data.partition(b"\r\n\r\n")
            lines = head_bytes.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
            while len(body) < int(headers["content-length"]):
                body += await stream.receive_some(65_536)
    return int(lines[0].split()[1]), headers, body


async def test_posts_are_refused_before_their_body_is_read(server):
    """The heads announce 8 MiB that are never sent: an answer proves nothing waited for it."""
    token = server.token("admitted")
    cases = [
        ("/graphql", "", 401, "UNAUTHORIZED"),
        ("/graphql", "Authorization: Bearer not-a-jwt\r\n", 401, "UNAUTHORIZED"),
        ("/realtime/tickets", "", 401, "UNAUTHORIZED"),
        ("/realtime/events", "X-Api-Key: nope\r\n", 404, "NOT_FOUND"),  # publish API off here
        ("/graphql", f"Authorization: Bearer {token}\r\n", 413, "PAYLOAD_TOO_LARGE"),
        ("/realtime/tickets", f"Authorization: Bearer {token}\r\n", 413, "PAYLOAD_TOO_LARGE"),
    ]
    for path, extra, status, code in cases:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: 8388608\r\n\r\n"
        )
        got, headers, body = await _raw_request(server.url, head)
        assert (got, httpx.Response(200, content=body).json()["error"]["code"]) == (status, code)
        assert headers["connection"] == "close", (path, headers)


async def test_a_keep_alive_client_stays_in_step_after_refusals(make_server, uid):
    node = make_server("--publish-api-keys", "k1")
    alice = uid("alice")
    token = node.token(alice)
    me = {"query": "{ me { id } }"}
    big = b"x" * 1_000_000
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        huge = b"x" * 9_000_000
        steps = [
            ("graphql", dict(content=big), 401, "error"),
            ("graphql", dict(json=me, headers=_bearer(token)), 200, "data"),
            ("graphql", dict(content=big, headers=_bearer(token)), 413, "error"),
            ("graphql", dict(json=me, headers=_bearer(token)), 200, "data"),
            (
                "graphql",
                dict(content=_chunks(b"x" * 65_536, 20), headers=_bearer(token)),
                413,
                "error",
            ),
            ("graphql", dict(json=me, headers=_bearer(token)), 200, "data"),
            ("realtime/tickets", dict(content=big), 401, "error"),
            ("realtime/tickets", dict(headers=_bearer(token)), 201, "ticket"),
            ("realtime/events", dict(content=big, headers={"X-Api-Key": "nope"}), 401, "error"),
            ("realtime/events", dict(content=huge, headers={"X-Api-Key": "k1"}), 413, "error"),
            ("realtime/events", dict(content=big, headers={"X-Api-Key": "k1"}), 400, "error"),
            ("graphql", dict(json=me, headers=_bearer(token)), 200, "data"),
            ("graphql", dict(json={"query": "{ me { id }"}, headers=_bearer(token)), 400, "errors"),
            ("graphql", dict(json=me, headers=_bearer(token)), 200, "data"),
        ]
        for path, kwargs, status, key in steps:
            response = await client.post(f"{node.url}/{path}", **kwargs)
            assert response.status_code == status, (path, status, response.text)
            assert response.json()[key], (path, response.text)
            if status == 200:
                assert response.json() == {"data": {"me": {"id": alice}}}


async def test_memory_stays_bounded_after_large_queries_and_bodies(make_server, uid):
    node = make_server()
    token = node.token(uid("heavy"))
    process = psutil.Process(node.process.pid)

    def dense(i: int) -> str:  # 50 aliases, ~900 tokens, ~6 KB: parsed, validated, executed
        fields = "id unreadCount lastReadMessageId updatedAt participantIds lastMessage { id body }"
        return (
            "{ "
            + " ".join(f"q{i}x{j}: conversations(first: 1) {{ {fields} }}" for j in range(50))
            + " }"
        )

    def large(i: int) -> str:  # ~60 KB, refused while parsing (tokens)
        return f"{{ me {{ id }} }} # {i}\n" + "{ me { id } }\n" * 4_300

    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(5):
            await client.post(
                f"{node.url}/graphql", json={"query": dense(-i - 1)}, headers=_bearer(token)
            )
        before = process.memory_info().rss

        async def send(i: int) -> None:
            dense_answer = await client.post(
                f"{node.url}/graphql", json={"query": dense(i)}, headers=_bearer(token)
            )
            assert dense_answer.status_code == 200, dense_answer.text
            large_answer = await client.post(
                f"{node.url}/graphql", json={"query": large(i)}, headers=_bearer(token)
            )
            assert large_answer.status_code == 400, large_answer.text
            unauthenticated = await client.post(f"{node.url}/graphql", content=b"[" * 8_388_608)
            assert unauthenticated.status_code == 401

        with trio.fail_after(120):
            for start in range(0, 100, 10):
                async with trio.open_nursery() as nursery:
                    for i in range(start, start + 10):
                        nursery.start_soon(send, i)
        after = process.memory_info().rss
    growth = (after - before) / 2**20
    print(
        f"\nserver RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB (+{growth:.1f} MB) after "
        "100 distinct 6 KB queries, 100 distinct 60 KB queries, 100 unauthenticated 8 MiB bodies"
    )
    assert growth < 60


async def test_the_gql_client_queries_mutates_and_gets_graphql_errors(server, uid):
    alice, bob = uid("alice"), uid("bob")
    url = f"{server.url}/graphql"

    def session_run() -> dict:
        transport = HTTPXTransport(url=url, headers=_bearer(server.token(alice)), timeout=30)
        found: dict = {}
        with Client(transport=transport, fetch_schema_from_transport=True) as session:
            found["me"] = session.execute(GraphQLRequest("{ me { id } }"))
            found["created"] = session.execute(
                GraphQLRequest(
                    "mutation($p: [ID!]!) { createConversation(participantIds: $p) { id } }",
                    variable_values={"p": [bob]},
                )
            )
            try:
                session.execute(GraphQLRequest('{ conversation(id: "nope") { id } }'))
            except TransportQueryError as error:
                found["execution error"] = error
        bomb = HTTPXTransport(url=url, headers=_bearer(server.token(alice)), timeout=30)
        with Client(transport=bomb) as session:  # no local validation: the server refuses
            try:
                session.execute(GraphQLRequest(BOMBS["depth (150 levels)"][0]))
            except TransportQueryError as error:
                found["refused"] = error
        anonymous = HTTPXTransport(url=url, timeout=30)
        with Client(transport=anonymous) as session:
            try:
                session.execute(GraphQLRequest("{ me { id } }"))
            except TransportServerError as error:
                found["401"] = error
        return found

    found = await trio.to_thread.run_sync(session_run)
    assert found["me"] == {"me": {"id": alice}}
    assert found["created"]["createConversation"]["id"]
    execution = found["execution error"]
    assert execution.errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert execution.data == {"conversation": None}
    assert found["refused"].errors[0]["extensions"]["limit"]["name"] == "depth"
    assert found["401"].code == 401
