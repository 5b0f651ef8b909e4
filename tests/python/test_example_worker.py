"""examples/worker.py delivers its progress events, in-process and through vxevents-server."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Client

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "examples" / "worker.py"
SERVER = Path(os.environ.get("VXEVENTS_SERVER", ROOT / "build" / "vxevents-server"))
if not SERVER.exists():
    raise RuntimeError(f"{SERVER} is not built (run make build)")


def collect(client, n):
    return [client.recv(10) for _ in range(n)]


def test_worker_hosting_its_own_server():
    proc = subprocess.Popen([sys.executable, str(WORKER), "--port", "0", "--steps", "3",
                             "--delay", "0.01", "--wait", "10"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+)/ws", proc.stdout.readline()).group(1))
        c = Client(port)
        assert c.subscribe("jobs.demo")["type"] == "subscription_succeeded"
        msgs = collect(c, 5)
        assert [m["event"] for m in msgs] == ["job.started"] + ["job.progress"] * 3 + [
            "job.finished"]
        assert msgs[3]["data"]["percent"] == 100
        c.close()
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.stdout.close()


def test_worker_publishing_through_vxevents_server():
    srv = subprocess.Popen([str(SERVER), "--host", "127.0.0.1", "--port", "0", "--api-key", "K"],
                           stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+) ", srv.stdout.readline()).group(1))
        c = Client(port)
        c.subscribe("jobs.nightly")
        out = subprocess.run([sys.executable, str(WORKER), "--server", f"http://127.0.0.1:{port}",
                              "--api-key", "K", "--job", "nightly", "--steps", "2",
                              "--delay", "0"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        msgs = collect(c, 4)
        assert [m["event"] for m in msgs] == ["job.started", "job.progress", "job.progress",
                                              "job.finished"]
        assert json.dumps(msgs[-1]["data"]) == '{"jobId": "nightly", "ok": true}'
        c.close()
    finally:
        srv.terminate()
        srv.wait(10)
        srv.stdout.close()
