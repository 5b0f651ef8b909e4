"""Channel authorization: POST /ws/auth runs the Python authorizer (sync or async);
the token it yields lets the WebSocket client subscribe; presence from Python."""

import asyncio
import json
import threading
import time

import pytest

import vxevents
from conftest import SECRET, post_json

seen_threads = []


def user_authorizer(channel, request):
    """The seed's example: public yes; private-user.<id> only for that user; presence with
    the user as member. The user comes from a header (as an app's own auth would)."""
    seen_threads.append(threading.current_thread().name)
    if channel.type == "public":
        return {"authorized": True}
    user = request.headers.get("x-user")
    if not user:
        return {"authorized": False, "error": "Authentication required"}
    if channel.name.startswith("private-user.") and channel.name[len("private-user."):] != user:
        return {"authorized": False, "error": "Access denied"}
    if channel.type == "presence":
        return {"authorized": True, "member": {"id": user, "info": {"name": user.title()}}}
    return {"authorized": True}


async def async_authorizer(channel, request):
    await asyncio.sleep(0.01)
    return user_authorizer(channel, request)


def make_server(authorizer=user_authorizer, **kw):
    srv = vxevents.events_plugin(auth_secret=SECRET, authorizer=authorizer, ping_interval=0, **kw)
    srv.listen("127.0.0.1", 0)
    return srv


def auth(port, socket_id, channel, user=None, **extra_headers):
    headers = dict(extra_headers)
    if user:
        headers["X-User"] = user
    return post_json(port, "/ws/auth", {"socketId": socket_id, "channel": channel}, headers)


@pytest.mark.parametrize("authorizer", [user_authorizer, async_authorizer],
                         ids=["sync", "async"])
def test_authorized_private_subscribe(authorizer, client_factory):
    with make_server(authorizer) as srv:
        c = client_factory(srv.port)
        status, body = auth(srv.port, c.socket_id, "private-user.42", user="42")
        assert status == 200, body
        assert body["auth"].startswith(c.socket_id + ":")
        assert body["auth"] == srv.sign(c.socket_id, "private-user.42")
        reply = c.subscribe("private-user.42", auth=body["auth"])
        assert reply["type"] == "subscription_succeeded", reply
        srv.broadcast("private-user.42", "secret", {"n": 1})
        assert c.recv()["data"] == {"n": 1}


@pytest.mark.parametrize("authorizer", [user_authorizer, async_authorizer],
                         ids=["sync", "async"])
def test_refusing_authorizer_answers_403_with_its_error(authorizer, client_factory):
    with make_server(authorizer) as srv:
        c = client_factory(srv.port)
        assert auth(srv.port, c.socket_id, "private-user.42", user="7") == (
            403, {"error": "Access denied"})
        assert auth(srv.port, c.socket_id, "private-user.42") == (
            403, {"error": "Authentication required"})
        reply = c.subscribe("private-user.42", auth=c.socket_id + ":" + "0" * 64)
        assert reply["type"] == "subscription_error"


def test_public_channel_auth_is_null(client_factory):
    with make_server() as srv:
        c = client_factory(srv.port)
        assert auth(srv.port, c.socket_id, "news") == (200, {"auth": None})


def test_sync_authorizer_runs_off_the_loop_thread(client_factory):
    seen_threads.clear()
    with make_server() as srv:
        c = client_factory(srv.port)
        auth(srv.port, c.socket_id, "private-x", user="1")
    assert seen_threads and all(n.startswith("vxevents-auth") for n in seen_threads)


@pytest.mark.parametrize("kind", ["sync", "async", "returns_coroutine"])
def test_raising_authorizer_refuses_without_crashing(kind, client_factory, caplog):
    def sync_bad(channel, request):
        raise RuntimeError("database down")

    async def async_bad(channel, request):
        raise RuntimeError("database down")

    fn = {"sync": sync_bad, "async": async_bad,
          "returns_coroutine": lambda ch, req: async_bad(ch, req)}[kind]
    with make_server(fn) as srv:
        c = client_factory(srv.port)
        assert auth(srv.port, c.socket_id, "private-a", user="1") == (
            403, {"error": "authorizer failed"})
        # The server keeps working.
        c.subscribe("pub")
        srv.broadcast("pub", "e", 1)
        assert c.recv()["data"] == 1
    assert "database down" in caplog.text


def test_authorizer_sees_request_details(client_factory):
    got = {}

    def authorizer(channel, request):
        got.update(channel=channel, method=request.method, path=request.path,
                   query=request.query, cookies=request.cookies, json=request.json,
                   header=request.headers.get("x-trace"), socket_id=request.socket_id)
        return True

    with make_server(authorizer) as srv:
        c = client_factory(srv.port)
        status, body = post_json(
            srv.port, "/ws/auth?v=2", {"socketId": c.socket_id, "channel": "private-doc.9"},
            {"Cookie": "session=abc; theme=dark", "X-Trace": "t-1"})
        assert status == 200 and body["auth"]
    assert got["channel"] == vxevents.Channel("private-doc.9", "private")
    assert got["channel"].name == "private-doc.9" and got["channel"].type == "private"
    assert got["method"] == "POST" and got["path"] == "/ws/auth" and got["query"] == "v=2"
    assert got["cookies"] == {"session": "abc", "theme": "dark"}
    assert got["json"] == {"socketId": c.socket_id, "channel": "private-doc.9"}
    assert got["header"] == "t-1" and got["socket_id"] == c.socket_id


def test_default_authorizer_and_missing_secret(client_factory):
    with vxevents.events_plugin(auth_secret=SECRET, ping_interval=0) as srv:
        port = srv.listen("127.0.0.1", 0)
        c = client_factory(port)
        assert auth(port, c.socket_id, "private-a")[0] == 403
        assert auth(port, c.socket_id, "pub") == (200, {"auth": None})
    with vxevents.events_plugin(authorizer=user_authorizer, ping_interval=0) as srv:
        port = srv.listen("127.0.0.1", 0)
        c = client_factory(port)
        assert auth(port, c.socket_id, "private-a", user="1") == (
            500, {"error": "authSecret is not configured"})


def test_bad_auth_body_is_400(client_factory):
    with make_server() as srv:
        status, body = post_json(srv.port, "/ws/auth", b"{nope")
        assert status == 400


def test_member_that_is_not_json_refuses(client_factory):
    with make_server(lambda ch, req: {"authorized": True, "member": {"id": object()}}) as srv:
        c = client_factory(srv.port)
        assert auth(srv.port, c.socket_id, "presence-r", user="1") == (
            403, {"error": "authorizer failed"})


def join_presence(srv, client, channel, user):
    status, body = auth(srv.port, client.socket_id, channel, user=user)
    assert status == 200, body
    assert json.loads(body["channel_data"])["id"] == user
    return client.subscribe(channel, auth=body["auth"], channel_data=body["channel_data"])


def test_presence_members_from_python(client_factory):
    with make_server(async_authorizer) as srv:
        alice, bob, bob2 = (client_factory(srv.port) for _ in range(3))
        ok = join_presence(srv, alice, "presence-room", "alice")
        assert ok["type"] == "subscription_succeeded", ok
        assert [m["id"] for m in ok["data"]["members"]] == ["alice"]
        join_presence(srv, bob, "presence-room", "bob")
        added = alice.recv_until(lambda m: m.get("event") == "member_added")
        assert added["data"] == {"id": "bob", "info": {"name": "Bob"}}
        join_presence(srv, bob2, "presence-room", "bob")  # same user, second tab
        alice.expect_silence()
        members = srv.presence_members("presence-room")
        assert sorted(m["id"] for m in members) == ["alice", "bob"]
        assert srv.presenceMembers("presence-room") == members
        assert srv.subscriber_count("presence-room") == 3
        assert sorted(m["id"] for m in asyncio.run(srv.apresence_members("presence-room"))) == [
            "alice", "bob"]
        assert srv.presence_members("presence-empty") == []


def test_sign_with_channel_data_matches_the_endpoint(client_factory):
    with make_server() as srv:
        c = client_factory(srv.port)
        status, body = auth(srv.port, c.socket_id, "presence-x", user="u1")
        member = json.loads(body["channel_data"])
        assert srv.sign(c.socket_id, "presence-x", body["channel_data"]) == body["auth"]
        token = srv.sign(c.socket_id, "presence-x", member)  # serialized compactly
        assert token == body["auth"]
        assert asyncio.run(srv.asign(c.socket_id, "presence-x", body["channel_data"])) == token


def test_many_concurrent_auth_requests(client_factory):
    with make_server(async_authorizer) as srv:
        c = client_factory(srv.port)
        results = []
        lock = threading.Lock()

        def one(i):
            r = auth(srv.port, c.socket_id, f"private-user.{i}", user=str(i if i % 2 else -1))
            with lock:
                results.append((i, r[0]))

        ts = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert time.monotonic() - t0 < 15
        assert sorted(results) == [(i, 200 if i % 2 else 403) for i in range(40)]
