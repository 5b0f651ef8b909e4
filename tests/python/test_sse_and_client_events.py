"""Server-Sent Events from a Python-hosted server (with the authorizer behind
POST /events/subscribe) and client events reaching on_client_event."""

import http.client
import json
import queue
import threading
import time

import pytest

import vxevents
from conftest import SECRET, post_json


class SSEClient:
    """A minimal EventSource over http.client: a reader thread parses the stream into
    (name, message) pairs. The SSE event: field must be the message's type; `name` is the
    application's event name for channel events and the type otherwise. A message whose
    event: field is not its type arrives as ("MISMATCH", ...), failing the test."""

    def __init__(self, port: int, target: str = "/events") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", target, headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("Content-Type", "").startswith("text/event-stream")
        self.events: "queue.Queue" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        name, msg = self.next()
        assert name == "connected", (name, msg)
        self.connection_id = msg["data"]["connectionId"]
        assert msg["data"]["socketId"] == self.connection_id

    def _read(self) -> None:
        name, data = None, []
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if data:
                        msg = json.loads("\n".join(data))
                        field = name or "message"
                        if field != msg.get("type"):
                            self.events.put(("MISMATCH", {"field": field, "message": msg}))
                        else:
                            self.events.put((msg["event"] if field == "event" else field, msg))
                    name, data = None, []
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
        except Exception:
            pass

    def next(self, timeout: float = 5):
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(2)
        except Exception:
            pass
        self.conn.close()


def authorizer(channel, request):
    if channel.type == "public":
        return True
    if request.headers.get("x-user") == "ok":
        if channel.type == "presence":
            return {"authorized": True, "member": {"id": "u1", "info": {}}}
        return {"authorized": True}
    return {"authorized": False, "error": "nope"}


@pytest.fixture
def sse_server():
    srv = vxevents.events_plugin(driver="sse", auth_secret=SECRET, authorizer=authorizer,
                                 ping_interval=0, heartbeat_interval=100, retry_interval=500)
    srv.listen("127.0.0.1", 0)
    clients = []

    def connect(target="/events"):
        c = SSEClient(srv.port, target)
        clients.append(c)
        return c

    yield srv, connect
    for c in clients:
        c.close()
    srv.close()


def test_sse_subscribe_and_receive(sse_server):
    srv, connect = sse_server
    es = connect()
    status, body = post_json(srv.port, "/events/subscribe",
                             {"connectionId": es.connection_id, "channel": "news"})
    assert (status, body) == (200, {"success": True})
    srv.broadcast("news", "headline", {"title": "hi"})
    name, msg = es.next()
    while name != "headline":  # subscription_succeeded may come first
        name, msg = es.next()
    assert msg["channel"] == "news" and msg["data"] == {"title": "hi"}
    assert srv.subscriber_count("news") == 1


def test_sse_channels_in_query(sse_server):
    srv, connect = sse_server
    es = connect("/events?channels=orders,announcements")
    deadline = time.monotonic() + 5
    while srv.subscriber_count("orders") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    srv.broadcast_to_many(["orders", "announcements"], "e", 1)
    got = set()
    while len(got) < 2:
        name, msg = es.next()
        if name == "e":
            got.add(msg["channel"])
    assert got == {"orders", "announcements"}


def test_sse_private_subscribe_goes_through_the_authorizer(sse_server):
    srv, connect = sse_server
    es = connect()
    body = {"connectionId": es.connection_id, "channel": "private-x"}
    assert post_json(srv.port, "/events/subscribe", body) == (403, {"error": "nope"})
    assert post_json(srv.port, "/events/subscribe", body, {"X-User": "ok"}) == (
        200, {"success": True})
    srv.broadcast("private-x", "secret", {"s": 1})
    name, msg = es.next()
    while name != "secret":
        name, msg = es.next()
    assert msg["data"] == {"s": 1}


def test_sse_options_are_checked():
    with pytest.raises(ValueError, match="sse_path"):
        vxevents.events_plugin(path="/ws", sse_path="/ws")
    with pytest.raises(ValueError):
        vxevents.events_plugin(driver="long-polling")


def test_ws_and_sse_side_by_side(client_factory):
    with vxevents.events_plugin(sse_path="/stream", ping_interval=0) as srv:
        port = srv.listen("127.0.0.1", 0)
        ws = client_factory(port)
        ws.subscribe("both")
        es = SSEClient(port, "/stream?channels=both")
        try:
            deadline = time.monotonic() + 5
            while srv.subscriber_count("both") < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            srv.broadcast("both", "e", [1])
            assert ws.recv()["data"] == [1]
            name, msg = es.next()
            while name != "e":
                name, msg = es.next()
            assert msg["data"] == [1]
        finally:
            es.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_client_events_reach_on_client_event(kind, client_factory):
    got = queue.Queue()

    def hook(socket_id, channel, event, data):
        got.put((threading.current_thread().name, socket_id, channel, event, data))

    async def ahook(socket_id, channel, event, data):
        got.put((threading.current_thread().name, socket_id, channel, event, data))

    with vxevents.events_plugin(auth_secret=SECRET, ping_interval=0,
                                on_client_event=hook if kind == "sync" else ahook) as srv:
        port = srv.listen("127.0.0.1", 0)
        a, b = client_factory(port), client_factory(port)
        for c in (a, b):
            r = c.subscribe("private-room", auth=srv.sign(c.socket_id, "private-room"))
            assert r["type"] == "subscription_succeeded", r
        a.send({"type": "message", "channel": "private-room", "event": "client-typing",
                "data": {"typing": True}})
        relayed = b.recv()
        assert relayed["event"] == "client-typing" and relayed["data"] == {"typing": True}
        thread, sid, channel, event, data = got.get(timeout=5)
        assert (sid, channel, event, data) == (a.socket_id, "private-room", "client-typing",
                                               {"typing": True})
        assert thread.startswith("vxevents-")


def test_raising_client_event_hook_is_logged(client_factory, caplog):
    def hook(*args):
        raise RuntimeError("hook broke")

    with vxevents.events_plugin(auth_secret=SECRET, ping_interval=0, on_client_event=hook) as srv:
        port = srv.listen("127.0.0.1", 0)
        a = client_factory(port)
        a.subscribe("private-r", auth=srv.sign(a.socket_id, "private-r"))
        a.send({"type": "message", "channel": "private-r", "event": "client-x", "data": 1})
        deadline = time.monotonic() + 5
        while "hook broke" not in caplog.text:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        a.subscribe("pub")
        srv.broadcast("pub", "e", 2)
        assert a.recv()["data"] == 2
