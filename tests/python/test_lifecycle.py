"""Lifetime: singleton, context managers, GC/refcounts, interpreter exit."""

import asyncio
import gc
import subprocess
import sys
import textwrap
import weakref

import pytest

import vxevents


def test_get_events_is_a_singleton_until_closed():
    a = vxevents.get_events()
    assert vxevents.get_events() is a
    a.broadcast("jobs", "progress", {"pct": 10})  # no subscribers: fine
    assert a.subscriber_count("jobs") == 0
    vxevents.close_events()
    assert a.closed
    b = vxevents.get_events()
    assert b is not a
    vxevents.close_events()
    vxevents.close_events()  # nothing to close: fine


def test_context_managers_close():
    with vxevents.events_plugin() as srv:
        srv.listen("127.0.0.1", 0)
    assert srv.closed

    async def main():
        async with vxevents.events_plugin() as s:
            await s.alisten("127.0.0.1", 0)
            assert await s.asubscriber_count("a") == 0
        return s

    assert asyncio.run(main()).closed


def test_instances_are_collected_and_refcounts_stay_flat():
    def authorizer(channel, request):
        return True

    gc.collect()
    before = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
    refs = []
    for _ in range(20):
        srv = vxevents.events_plugin(authorizer=authorizer)
        srv.listen("127.0.0.1", 0)
        srv.subscriber_count("a")
        srv.channels()
        refs.append(weakref.ref(srv))
        srv.close()
        del srv
    # Also never closed explicitly: dropping the last reference frees the core.
    for _ in range(5):
        srv = vxevents.events_plugin(authorizer=authorizer)
        refs.append(weakref.ref(srv))
        del srv
    gc.collect()
    assert all(r() is None for r in refs)
    if before is not None:  # debug builds only
        assert sys.gettotalrefcount() - before < 1000
    # The callback of an async query is released once it ran.
    with vxevents.events_plugin() as srv:
        marker = object()
        rc = sys.getrefcount(marker)
        done = []
        srv._core.subscriber_count("a", lambda v, m=marker: done.append(v))
        for _ in range(100):
            if done:
                break
            import time
            time.sleep(0.01)
        assert done == [0]
        for _ in range(100):  # the record drops the callback right after calling it
            if sys.getrefcount(marker) == rc:
                break
            time.sleep(0.01)
        assert sys.getrefcount(marker) == rc


def test_callback_that_raises_does_not_leak_into_c(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    with vxevents.events_plugin() as srv:
        hit = []

        def bad(value):
            hit.append(value)
            raise RuntimeError("boom in callback")

        srv._core.subscriber_count("a", bad)
        import time
        for _ in range(200):
            if hit:
                break
            time.sleep(0.01)
        time.sleep(0.05)
        assert srv.subscriber_count("a") == 0  # still working
    assert [str(e) for e in reported] == ["boom in callback"]


@pytest.mark.parametrize("scenario", ["open_server_and_client", "pending_async", "no_close"])
def test_interpreter_exit_with_open_handles_does_not_hang(scenario):
    code = textwrap.dedent(f"""
        import asyncio, threading, vxevents
        from websockets.sync.client import connect
        scenario = {scenario!r}
        srv = vxevents.events_plugin(authorizer=lambda c, r: True)
        port = srv.listen("127.0.0.1", 0)
        ev = vxevents.get_events()
        if scenario == "open_server_and_client":
            ws = connect(f"ws://127.0.0.1:{{port}}/ws").__enter__()
            ws.recv(timeout=5)
            ws.send('{{"type":"subscribe","channel":"a"}}')
            ws.recv(timeout=5)
            srv.broadcast("a", "e", 1)
        elif scenario == "pending_async":
            for _ in range(100):
                srv._core.subscriber_count("a", lambda v: None)
                srv._core.channels(lambda v: None)
        t = threading.Thread(target=lambda: [srv.broadcast("a", "e", i) for i in range(1000)],
                             daemon=True)
        t.start()
        print("ok", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_repeated_calls_do_not_leak_python_objects(server, client_factory):
    """Every result, error and callback made by the C layer is released: after warm-up,
    thousands of rounds leave (almost) nothing allocated outside asyncio's own caches."""
    import tracemalloc
    c = client_factory(server.port)
    c.subscribe("leak")

    def round_trip(n):
        for i in range(n):
            server.broadcast("nobody", "e", {"i": i})
            server.broadcast_to_many(["nobody", "nobody2"], "e", b"[1]")
            server.subscriber_count("leak")
            server.has_subscribers("leak")
            server.channels()
            server.stats()
            try:
                server.subscriber_count("bad name")
            except vxevents.VxValueError:
                pass

        async def many():
            return await asyncio.gather(*[server.asubscriber_count("leak") for _ in range(n)])

        assert asyncio.run(many()) == [1] * n

    round_trip(300)  # warm-up: caches, interned strings, the event loop policy
    gc.collect()
    tracemalloc.start()
    first = tracemalloc.take_snapshot()
    round_trip(2000)
    gc.collect()
    second = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, "*/asyncio/*"), tracemalloc.Filter(False, "*_weakrefset.py"),
              tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = second.filter_traces(ignore).compare_to(first.filter_traces(ignore), "filename")
    grown = sum(d.size_diff for d in diff)
    assert grown < 50_000, f"{grown} bytes still allocated after 2000 rounds: {diff[:3]}"


def test_last_reference_dropped_on_the_loop_thread_does_not_deadlock():
    import threading
    import time
    for _ in range(20):
        done = threading.Event()
        core = vxevents._core.Core()
        ref = weakref.ref(core)
        core.subscriber_count("a", lambda v: done.set())
        del core  # the pending query's record now holds the only reference
        assert done.wait(5)
        deadline = time.monotonic() + 5
        while ref() is not None:  # freed by the main thread shortly after
            assert time.monotonic() < deadline
            time.sleep(0.01)
