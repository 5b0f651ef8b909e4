"""permessage-deflate (RFC 7692) against the strict `websockets` client: it refuses a
handshake whose answer does not match its offer exactly (an offered
server_max_window_bits must be echoed, §7.1.2.1), so it checks the negotiation the way
a browser-grade client does."""

from __future__ import annotations

import json

import pytest
from websockets.extensions.permessage_deflate import (ClientPerMessageDeflateFactory,
                                                      PerMessageDeflate)
from websockets.sync.client import connect


def _open(port: int, factory):
    return connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=2,
                   extensions=[factory] if factory else None, compression=None)


def _deflate(ws) -> PerMessageDeflate | None:
    found = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
    return found[0] if found else None


def _roundtrip(server, ws, channel: str) -> None:
    hello = json.loads(ws.recv(timeout=5))
    assert hello["event"] == "connected", hello
    ws.send(json.dumps({"type": "subscribe", "channel": channel, "pad": "p" * 300}))
    ack = json.loads(ws.recv(timeout=5))
    assert ack["type"] == "subscription_succeeded" and ack["channel"] == channel, ack
    text = "compressible " * 400
    server.broadcast(channel, "big", {"text": text})
    msg = json.loads(ws.recv(timeout=5))
    assert msg["event"] == "big" and msg["data"]["text"] == text, str(msg)[:200]


@pytest.mark.parametrize("offer", [
    {},
    {"client_max_window_bits": True},
    {"server_max_window_bits": 15},
    {"server_max_window_bits": 15, "client_max_window_bits": True},
    {"server_no_context_takeover": True, "client_no_context_takeover": True},
    {"server_max_window_bits": 15, "server_no_context_takeover": True,
     "client_no_context_takeover": True, "client_max_window_bits": 12},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "bare")
def test_strict_client_accepts_the_negotiated_deflate_and_messages_flow(server, offer):
    with _open(server.port, ClientPerMessageDeflateFactory(**offer)) as ws:
        ext = _deflate(ws)
        assert ext is not None, "permessage-deflate was not negotiated"
        # No context takeover both ways, whatever was offered: one compressed frame
        # serves every recipient.
        assert ext.remote_no_context_takeover and ext.local_no_context_takeover
        if offer.get("server_max_window_bits"):
            assert ext.remote_max_window_bits == 15
        _roundtrip(server, ws, "py-deflate")


def test_default_websockets_offer_is_accepted(server):
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5, close_timeout=2) as ws:
        assert _deflate(ws) is not None
        _roundtrip(server, ws, "py-default")


@pytest.mark.parametrize("bits", [8, 9, 10, 14])
def test_smaller_server_window_is_declined_and_the_connection_opens_plain(server, bits):
    # The one shared deflate stream uses a 15-bit window; an offer that limits it is
    # declined (RFC 7692 §7.1.2.1 allows that), never answered with a mismatch.
    with _open(server.port, ClientPerMessageDeflateFactory(server_max_window_bits=bits)) as ws:
        assert _deflate(ws) is None
        _roundtrip(server, ws, f"py-plain-{bits}")
