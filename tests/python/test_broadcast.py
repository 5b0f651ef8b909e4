"""Broadcasts from Python reach real WebSocket clients of a Python-hosted server."""

import json

import vxevents


def test_client_gets_connected_with_socket_id(server, client_factory):
    c = client_factory(server.port)
    assert isinstance(c.socket_id, str) and len(c.socket_id) >= 16


def test_listen_returns_bound_port(server):
    assert isinstance(server.port, int) and server.port > 0


def test_broadcast_dict_reaches_subscriber(server, client_factory):
    c = client_factory(server.port)
    assert c.subscribe("orders")["type"] == "subscription_succeeded"
    server.broadcast("orders", "order.created", {"orderId": 1, "name": "café"})
    msg = c.recv()
    assert msg == {"type": "event", "channel": "orders", "event": "order.created",
                   "data": {"orderId": 1, "name": "café"}, "offset": 1}


def test_str_data_is_a_json_string_value(server, client_factory):
    c = client_factory(server.port)
    c.subscribe("a")
    server.broadcast("a", "e", '{"not":"parsed"}')
    assert c.recv()["data"] == '{"not":"parsed"}'


def test_bytes_and_raw_str_pass_through_as_json_text(server, client_factory):
    c = client_factory(server.port)
    c.subscribe("a")
    server.broadcast("a", "e", b'{"pre":[1,2]}')
    assert c.recv()["data"] == {"pre": [1, 2]}
    server.broadcast("a", "e", '{"raw":true}', raw=True)
    assert c.recv()["data"] == {"raw": True}


def test_none_data_is_null(server, client_factory):
    c = client_factory(server.port)
    c.subscribe("a")
    server.broadcast("a", "e")
    assert c.recv()["data"] is None


def test_broadcast_to_many_and_camel_case_alias(server, client_factory):
    a, b = client_factory(server.port), client_factory(server.port)
    a.subscribe("user.1")
    b.subscribe("user.2")
    server.broadcast_to_many(["user.1", "user.2", "user.3"], "notification", {"m": 1})
    assert a.recv()["channel"] == "user.1"
    assert b.recv()["channel"] == "user.2"
    server.broadcastToMany(["user.1"], "n2", None)
    assert a.recv()["event"] == "n2"


def test_broadcast_except_skips_the_sender(server, client_factory):
    sender, other = client_factory(server.port), client_factory(server.port)
    sender.subscribe("chat")
    other.subscribe("chat")
    server.broadcast_except("chat", "message.sent", {"text": "hi"}, sender.socket_id)
    assert other.recv()["data"] == {"text": "hi"}
    sender.expect_silence()
    server.broadcastExcept("chat", "m2", 1, other.socket_id)
    assert sender.recv()["event"] == "m2"
    server.broadcast("chat", "m3", 2, sender.socket_id)
    assert other.recv()["event"] == "m3"
    sender.expect_silence()


def test_abroadcast_from_asyncio(server, client_factory):
    import asyncio
    c = client_factory(server.port)
    c.subscribe("x")

    async def main():
        await server.abroadcast("x", "e", [1, 2, 3])
        await server.abroadcast_to_many(["x"], "e2", {})

    asyncio.run(main())
    assert c.recv()["data"] == [1, 2, 3]
    assert c.recv()["event"] == "e2"


def test_custom_path(client_factory):
    with vxevents.events_plugin(path="/rt", ping_interval=0) as srv:
        port = srv.listen("127.0.0.1", 0)
        c = client_factory(port, "/rt")
        c.subscribe("p")
        srv.broadcast("p", "e", {"ok": True})
        assert c.recv()["data"] == {"ok": True}


def test_http_publish_api_with_api_key(client_factory):
    from conftest import post_json
    with vxevents.events_plugin(api_key="K", ping_interval=0) as srv:
        port = srv.listen("127.0.0.1", 0)
        c = client_factory(port)
        c.subscribe("api")
        status, body = post_json(port, "/api/broadcast",
                                 {"channel": "api", "event": "e", "data": {"n": 1}},
                                 {"Authorization": "Bearer K"})
        assert (status, body) == (200, {"success": True})
        assert json.dumps(c.recv()["data"]) == '{"n": 1}'
