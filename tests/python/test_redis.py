"""A worker (get_events(redis=...)) broadcasting through a real redis-server to a separate
vxevents-server process and to Python-hosted servers; the event reaches their clients."""

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import vxevents
from conftest import Client

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("VXEVENTS_SERVER", ROOT / "build" / "vxevents-server"))
REDIS = shutil.which("redis-server")

# Required, not optional: a missing redis-server or server binary fails the run instead of
# quietly skipping what it was meant to prove.
if REDIS is None:
    raise RuntimeError("redis-server is not installed (the Redis tests need it)")
if not SERVER.exists():
    raise RuntimeError(f"{SERVER} is not built (run make build)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url():
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def worker(redis_url):
    vxevents.close_events()
    events = vxevents.get_events(redis=redis_url)
    yield events
    vxevents.close_events()


def eventually_receives(client, publish, timeout=10):
    """Publish until the first message arrives (the worker's Redis link may still be
    coming up), then return it."""
    deadline = time.monotonic() + timeout
    while True:
        publish()
        try:
            return client.recv(0.2)
        except TimeoutError:
            assert time.monotonic() < deadline, "nothing arrived through Redis"


def test_worker_reaches_clients_of_a_vxevents_server_process(redis_url, worker):
    srv = subprocess.Popen([str(SERVER), "--host", "127.0.0.1", "--port", "0", "--redis",
                            redis_url], stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+) ", srv.stdout.readline()).group(1))
        c = Client(port)
        assert c.subscribe("jobs.42")["type"] == "subscription_succeeded"
        first = eventually_receives(c, lambda: worker.broadcast("jobs.42", "progress", {"pct": 0}))
        assert first["data"] == {"pct": 0}
        while True:  # drain retries of the probe
            try:
                c.recv(0.3)
            except TimeoutError:
                break
        for pct in (50, 100):
            worker.broadcast("jobs.42", "progress", {"pct": pct})
        assert [c.recv()["data"]["pct"] for _ in range(2)] == [50, 100]
        worker.broadcast_to_many(["jobs.42", "jobs.43"], "done", True)
        assert c.recv()["event"] == "done"
        c.expect_silence()  # exactly once
        c.close()
    finally:
        srv.terminate()
        srv.wait(10)
        srv.stdout.close()


def test_two_python_servers_share_broadcasts(redis_url, client_factory):
    with vxevents.events_plugin(redis=redis_url, ping_interval=0) as a, \
            vxevents.events_plugin(redis=redis_url, ping_interval=0) as b:
        pa, pb = a.listen("127.0.0.1", 0), b.listen("127.0.0.1", 0)
        ca, cb = client_factory(pa), client_factory(pb)
        assert ca.subscribe("room")["type"] == "subscription_succeeded"
        assert cb.subscribe("room")["type"] == "subscription_succeeded"
        a.broadcast("room", "hello", {"from": "a"})
        assert ca.recv()["data"] == {"from": "a"}
        assert cb.recv()["data"] == {"from": "a"}
        # except reaches across instances: skip the client on b
        a.broadcast_except("room", "m", 1, cb.socket_id)
        assert ca.recv()["event"] == "m"
        cb.expect_silence()
        b.broadcast("room", "back", 2)
        assert ca.recv()["event"] == "back" and cb.recv()["event"] == "back"
        ca.expect_silence()


def test_redis_prefix_separates_fleets(redis_url, client_factory):
    with vxevents.events_plugin(redis=redis_url, redis_prefix="fleet-a", ping_interval=0) as a, \
            vxevents.events_plugin(redis=redis_url, redis_prefix="fleet-b", ping_interval=0) as b:
        pb = b.listen("127.0.0.1", 0)
        a.listen("127.0.0.1", 0)
        cb = client_factory(pb)
        cb.subscribe("shared")
        time.sleep(0.2)
        a.broadcast("shared", "e", 1)
        cb.expect_silence(0.5)
        b.broadcast("shared", "e", 2)
        assert cb.recv()["data"] == 2


def test_unreachable_redis_does_not_break_local_delivery(client_factory):
    port = free_port()  # nothing listens there
    with vxevents.events_plugin(redis=f"redis://127.0.0.1:{port}", ping_interval=0) as srv:
        p = srv.listen("127.0.0.1", 0)
        c = client_factory(p)
        reply = c.subscribe("local")
        if reply["type"] == "subscription_succeeded":
            srv.broadcast("local", "e", 1)
            assert c.recv()["data"] == 1
        srv.broadcast("elsewhere", "e", 1)  # queued in the backlog, no error


def test_example_worker_through_redis(redis_url):
    import sys
    srv = subprocess.Popen([str(SERVER), "--host", "127.0.0.1", "--port", "0", "--redis",
                            redis_url], stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+) ", srv.stdout.readline()).group(1))
        c = Client(port)
        assert c.subscribe("jobs.r")["type"] == "subscription_succeeded"
        out = subprocess.run([sys.executable, str(ROOT / "examples" / "worker.py"), "--redis",
                              redis_url, "--job", "r", "--steps", "2", "--delay", "0"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert [c.recv()["event"] for _ in range(4)] == [
            "job.started", "job.progress", "job.progress", "job.finished"]
        c.close()
    finally:
        srv.terminate()
        srv.wait(10)
        srv.stdout.close()


def test_counts_and_channels_are_cluster_wide(redis_url, worker, client_factory):
    with vxevents.events_plugin(redis=redis_url, redis_prefix="vx", ping_interval=0) as b:
        c = client_factory(b.listen("127.0.0.1", 0))
        assert c.subscribe("fleet.room")["type"] == "subscription_succeeded"
        deadline = time.monotonic() + 10
        while worker.subscriber_count("fleet.room") != 1:  # the worker has no clients itself
            assert time.monotonic() < deadline, "count never reached the worker"
            time.sleep(0.05)
        assert worker.has_subscribers("fleet.room") is True
        assert "fleet.room" in worker.channels()
        c.close()
        deadline = time.monotonic() + 10
        while worker.has_subscribers("fleet.room"):
            assert time.monotonic() < deadline, "count never went back to 0"
            time.sleep(0.05)
