"""Flow control from Python: a producer that broadcasts far faster than its clients read is
paced (the sync call blocks with the GIL released, the async one awaits) and never costs
healthy clients their connection. Real processes: an in-process server on a loopback port,
500 `ws` subscribers in a Node process (tests/flow/subscribers.mjs) that check every event
arrives, in order."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import vxevents

SUBSCRIBERS = Path(__file__).resolve().parents[1] / "flow" / "subscribers.mjs"
SUBS, N = (int(x) for x in os.environ.get("VX_FLOW_BURST", "500,200000").split(","))
PAD = "x" * 200


def peak_mib() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024


class Fleet:
    """The subscriber process: JSON lines on stdout (ready, then the outcome)."""

    def __init__(self, port: int, channel: str, count: int, expect: int) -> None:
        self.proc = subprocess.Popen(
            ["node", str(SUBSCRIBERS), f"ws://127.0.0.1:{port}/ws", channel, str(count),
             str(expect)], stdout=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(json.loads(line))
                self.cv.notify_all()

    def next(self, timeout: float) -> dict:
        with self.cv:
            assert self.cv.wait_for(lambda: self.lines, timeout), "the subscribers did not answer"
            return self.lines.pop(0)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def stalled_subscriber(port: int, channel: str) -> socket.socket:
    """A raw WebSocket client subscribed to `channel` that reads nothing more (until the
    test reads its socket)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    seen = b""
    while b'"connected"' not in seen:
        seen += s.recv(4096)
    payload = json.dumps({"type": "subscribe", "channel": channel}).encode()
    mask = b"\x01\x02\x03\x04"
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    while b"subscription_succeeded" not in seen:
        seen += s.recv(4096)
    return s


def check(got: dict, stats: dict, produced_s: float) -> None:
    assert got["reason"] == "all", got
    assert got["complete"] == SUBS and got["outOfOrder"] == 0 and got["closed"] == [], got
    assert stats["slow_consumer_closes"] == 0
    assert stats["connections"] == SUBS
    # paced: the producer waited for capacity and took most of the delivery time
    assert stats["flow_waits"] > 0 and stats["flow_wait_ms"] > 0, stats
    assert produced_s * 1000 > got["ms"] / 2, (produced_s, got["ms"])
    assert peak_mib() < 250, f"peak RSS {peak_mib()} MiB"


def test_sync_broadcasts_block_until_accepted_and_every_subscriber_gets_all_in_order():
    srv = vxevents.events_plugin()
    fleet = None
    try:
        port = srv.listen("127.0.0.1", 0)
        fleet = Fleet(port, "bench", SUBS, N)
        assert fleet.next(60)["ready"]
        t0 = time.monotonic()
        for i in range(N):
            srv.broadcast("bench", "e", {"i": i, "pad": PAD})
        produced = time.monotonic() - t0
        got = fleet.next(540)
        check(got, srv.stats(), produced)
        print(f"sync: producer {produced:.1f} s, delivery {got['ms'] / 1000:.1f} s, "
              f"peak RSS {peak_mib():.0f} MiB")
    finally:
        if fleet:
            fleet.close()
        srv.close()


def test_async_broadcasts_await_capacity_without_blocking_the_event_loop():
    srv = vxevents.events_plugin()
    fleet = None
    try:
        port = srv.listen("127.0.0.1", 0)
        fleet = Fleet(port, "bench", SUBS, N)
        assert fleet.next(60)["ready"]

        async def main() -> tuple[float, int]:
            ticks = 0
            done = False

            async def ticker() -> None:  # the event loop stays responsive while waiting
                nonlocal ticks
                while not done:
                    ticks += 1
                    await asyncio.sleep(0.05)

            t = asyncio.create_task(ticker())
            t0 = time.monotonic()
            for i in range(N):
                await srv.abroadcast("bench", "e", {"i": i, "pad": PAD})
            produced = time.monotonic() - t0
            done = True
            await t
            return produced, ticks

        produced, ticks = asyncio.run(main())
        got = fleet.next(540)
        check(got, srv.stats(), produced)
        assert ticks >= produced / 0.05 / 4, (ticks, produced)
    finally:
        if fleet:
            fleet.close()
        srv.close()


def test_concurrent_abroadcasts_keep_call_order_and_close_wakes_a_blocked_sync_one():
    # The only client never reads: the core fills up, waiting broadcasts stay in order.
    srv = vxevents.events_plugin(max_command_queue=65536, slow_consumer_ms=60000)
    try:
        port = srv.listen("127.0.0.1", 0)
        s = stalled_subscriber(port, "slow")
        pad = "y" * 8000
        order: list[int] = []

        async def main() -> list:
            async def one(i: int) -> None:
                await srv.abroadcast("slow", "e", {"i": i, "pad": pad})
                order.append(i)
            tasks = [asyncio.ensure_future(one(i)) for i in range(3000)]
            # until the core ran out of room and the client's buffers are full: nothing more
            # is accepted
            last = -1
            for _ in range(80):
                await asyncio.sleep(0.25)
                if srv.stats()["flow_waits"] and len(order) == last:
                    break
                last = len(order)
            assert srv.stats()["flow_waits"] > 0
            before = len(order)
            await asyncio.sleep(0.3)
            assert len(order) < 3000 and len(order) == before
            # read again (in a thread): everything is accepted, in call order
            def drain() -> None:
                try:
                    while s.recv(1 << 20):
                        pass
                except OSError:
                    pass
            threading.Thread(target=drain, daemon=True).start()
            return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)

        results = asyncio.run(main())
        assert all(r is None for r in results)
        assert order == list(range(3000))
        s.close()
    finally:
        srv.close()


def test_close_wakes_a_sync_broadcast_waiting_for_capacity():
    srv = vxevents.events_plugin(max_command_queue=65536, slow_consumer_ms=60000)
    port = srv.listen("127.0.0.1", 0)
    s = stalled_subscriber(port, "slow")
    outcome: list = []

    def producer() -> None:
        try:
            for i in range(100000):
                srv.broadcast("slow", "e", {"i": i, "pad": "z" * 8000})
            outcome.append("all accepted")
        except vxevents.VxError as e:
            outcome.append(e.code)

    t = threading.Thread(target=producer)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.stats()["flow_waits"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.stats()["flow_waits"] > 0
    time.sleep(0.2)
    assert t.is_alive()  # blocked, with the GIL released (this thread runs)
    t0 = time.monotonic()
    srv.close()
    t.join(10)
    assert not t.is_alive()
    assert outcome == ["ECLOSED"]
    assert time.monotonic() - t0 < 10
    s.close()
