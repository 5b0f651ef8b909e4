"""Shared fixtures: a Python-hosted vxevents server and a small WebSocket client helper
built on the `websockets` library's synchronous client."""

from __future__ import annotations

import contextlib
import http.client
import json
import time

import pytest
from websockets.sync.client import connect

import vxevents

SECRET = "s" * 40


class Client:
    """One WebSocket connection, with its socket id from the `connected` message."""

    def __init__(self, port: int, path: str = "/ws", ssl=None) -> None:
        self._stack = contextlib.ExitStack()
        url = f"wss://localhost:{port}{path}" if ssl else f"ws://127.0.0.1:{port}{path}"
        self.ws = self._stack.enter_context(connect(
            url, open_timeout=5, close_timeout=2, max_size=None, ssl=ssl))
        hello = self.recv()
        assert hello["type"] == "event" and hello["event"] == "connected", hello
        self.socket_id: str = hello["data"]["socketId"]

    def send(self, msg: dict) -> None:
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float = 5) -> dict:
        return json.loads(self.ws.recv(timeout=timeout))

    def recv_until(self, pred, timeout: float = 5) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if pred(msg):
                return msg

    def subscribe(self, channel: str, **extra) -> dict:
        self.send({"type": "subscribe", "channel": channel, **extra})
        return self.recv_until(lambda m: m.get("channel") == channel and m["type"] in (
            "subscription_succeeded", "subscription_error"))

    def expect_silence(self, timeout: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            self.recv(timeout)

    def close(self) -> None:
        self._stack.close()


def post_json(port: int, path: str, body, headers: dict | None = None):
    """POST `body` (a dict, or raw bytes) and return (status, parsed JSON or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                    **(headers or {})})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, None


@pytest.fixture
def server():
    srv = vxevents.events_plugin(ping_interval=0)
    srv.listen("127.0.0.1", 0)
    yield srv
    srv.close()


@pytest.fixture
def client_factory():
    made: list[Client] = []

    def make(port: int, path: str = "/ws") -> Client:
        c = Client(port, path)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.close()
        except Exception:
            pass
