"""Channel streams from Python (DESIGN §12): publish() returns the offset a broadcast got,
history() reads a channel's stream, and a WebSocket client that drops and subscribes again
with ``recover`` gets what it missed."""

import asyncio

import pytest

import vxevents


def test_publish_returns_offsets_and_recover_replays_what_was_missed(server, client_factory):
    a = client_factory(server.port)
    ack = a.subscribe("py.orders")
    assert ack["data"]["offset"] == 0
    epoch = ack["data"]["epoch"]
    first = server.publish("py.orders", "n", {"i": 1})
    assert first == {"offset": 1, "epoch": epoch}
    assert a.recv()["offset"] == 1
    a.close()
    assert [server.publish("py.orders", "n", {"i": i})["offset"] for i in range(2, 6)] == [2, 3, 4, 5]
    b = client_factory(server.port)
    r = b.subscribe("py.orders", recover={"offset": 1, "epoch": epoch})
    assert r["recovered"] is True
    got = [b.recv() for _ in range(4)]
    assert [m["offset"] for m in got] == [2, 3, 4, 5]
    assert [m["data"]["i"] for m in got] == [2, 3, 4, 5]
    b.expect_silence()


def test_history_reads_the_stream_with_since_and_limit(server):
    for i in range(1, 8):
        server.broadcast("py.h", "n", {"i": i})
    h = server.history("py.h", since=2, limit=3)
    assert h["channel"] == "py.h" and h["offset"] == 7 and h["complete"] is True
    assert [e["offset"] for e in h["events"]] == [3, 4, 5]
    assert h["events"][0] == {"type": "event", "channel": "py.h", "event": "n", "data": {"i": 3},
                              "offset": 3}
    assert server.history("py.none") == {"channel": "py.none", "epoch": "", "offset": 0,
                                         "complete": True, "events": []}
    with pytest.raises(ValueError):
        server.history("py.h", since=-1)
    with pytest.raises(ValueError):
        server.history("py.h", limit=10001)
    with pytest.raises(vxevents.VxError) as e:
        server.history("bad name")
    assert e.value.code == "ECHANNEL"


def test_history_bounded_per_channel():
    with vxevents.events_plugin(ping_interval=0, history_size=3) as srv:
        srv.listen("127.0.0.1", 0)
        for i in range(10):
            srv.broadcast("py.b", "n", i)
        h = srv.history("py.b")
        assert [e["offset"] for e in h["events"]] == [8, 9, 10]
        assert h["complete"] is False
        assert srv.stats()["history_bytes"] > 0


def test_async_twins(server):
    async def go():
        r = await server.apublish("py.async", "n", 1)
        h = await server.ahistory("py.async")
        return r, h
    r, h = asyncio.run(go())
    assert r["offset"] == 1 and len(r["epoch"]) == 8
    assert h["epoch"] == r["epoch"] and [e["data"] for e in h["events"]] == [1]
