"""Operations from Python: metrics() / ametrics() return the Prometheus text of GET /metrics
(parsed with prometheus_client's own parser), and allowed_origins refuses other pages' upgrades
with 403 before the WebSocket opens."""

import asyncio
import http.client

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import vxevents


def sample(text: str, name: str, **labels) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def family_type(text: str, name: str) -> str:
    return next(f.type for f in text_string_to_metric_families(text) if f.name == name)


def test_metrics_follow_connections_and_broadcasts(server, client_factory):
    clients = [client_factory(server.port) for _ in range(3)]
    for c in clients:
        c.subscribe("ops")
    text = server.metrics()
    ws = sample(text, "vxevents_connections", transport="ws") + \
        sample(text, "vxevents_connections", transport="ws_deflate")
    assert ws == 3
    assert sample(text, "vxevents_subscriptions") == 3
    assert family_type(text, "vxevents_connections") == "gauge"
    assert family_type(text, "vxevents_broadcast_fanout_seconds") == "histogram"
    out_before = sample(text, "vxevents_messages_out_total")
    server.broadcast("ops", "tick", {"n": 1})
    for c in clients:
        assert c.recv_until(lambda m: m.get("event") == "tick")["data"] == {"n": 1}
    after = asyncio.run(server.ametrics())
    assert sample(after, "vxevents_broadcast_fanout_seconds_count") == 1
    assert sample(after, "vxevents_messages_out_total") >= out_before + 3


def test_metrics_route_is_guarded_by_the_metrics_token():
    with vxevents.events_plugin(ping_interval=0, metrics_token="tok-123") as srv:
        port = srv.listen("127.0.0.1", 0)
        for auth, status in (("Bearer tok-123", 200), ("Bearer nope", 401), (None, 401)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/metrics", headers={"Authorization": auth} if auth else {})
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
            assert resp.status == status, body
            if status == 200:
                assert resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
                assert body == srv.metrics() or "vxevents_info" in body


def test_allowed_origins_list_refuses_other_origins_with_403():
    with vxevents.events_plugin(ping_interval=0,
                                allowed_origins=["https://app.example.com", "*.example.org"]) as srv:
        port = srv.listen("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/ws"
        for origin in ("https://app.example.com", "https://x.example.org", None):
            with connect(url, origin=origin, open_timeout=5) as ws:
                assert '"connected"' in ws.recv(timeout=5)
        for origin in ("https://evil-example.org", "https://example.org", "null"):
            with pytest.raises(InvalidStatus) as e:
                connect(url, origin=origin, open_timeout=5)
            assert e.value.response.status_code == 403
        assert sample(srv.metrics(), "vxevents_rejected_connections_total", reason="origin") == 3
    with pytest.raises(ValueError):
        vxevents.events_plugin(allowed_origins=["https://a.example.com/path"])
    with pytest.raises(ValueError):
        vxevents.events_plugin(allowed_origins=["a,b"])
