"""The Python options and the core's options table cannot drift: every table row with a
Python name is accepted by get_events() / events_plugin() and declared in the stub's
EventsOptions, and the table's bounds are the ones enforced (min-1 and max+1 refused with
the option named)."""

from __future__ import annotations

import ast
import pathlib
import re
import socket

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.sync.client import connect

import vxevents

STUB = pathlib.Path(__file__).resolve().parents[2] / "bindings-python" / "vxevents" / "__init__.pyi"
ROWS = [r for r in vxevents.OPTION_TABLE if r["python"]]


def _good(row):
    kind = row["type"]
    if kind == "bool":
        return not row["default"]
    if kind == "path":
        return "/p"
    if kind == "redis":
        return "redis://127.0.0.1:1"
    if kind == "level":
        return "debug"
    if kind in ("secret", "string"):
        return "x" * max(row["min"], 1)
    return row["min"]


def _outside(row):
    kind, lo, hi = row["type"], row["min"], row["max"]
    if kind in ("uint", "size"):
        return ([lo - 1] if lo > 0 else [-1]) + [hi + 1]
    if kind == "secret":
        return ["x" * (lo - 1), "x" * (hi + 1)]
    if kind == "path":
        return ["/" + "p" * hi]
    if kind == "redis":
        return ["redis://" + "h" * hi]
    if kind == "string":  # an empty string means the default: only the upper bound is outside
        return ["x" * (hi + 1)]
    if kind == "level":
        return ["loud"]
    return []


def _stub_options() -> set[str]:
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "EventsOptions":
            return {s.target.id for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    raise AssertionError("the stub declares no EventsOptions")


def test_the_table_reaches_python_with_compression_and_history_size():
    names = {r["python"] for r in ROWS}
    assert {"compression", "history_size", "history_ttl", "history_max_bytes", "auth_secret", "redis", "log_level"} <= names


def test_every_row_with_a_python_name_is_accepted_and_declared():
    declared = _stub_options()
    for row in ROWS:
        name = row["python"]
        assert name in declared, f"__init__.pyi EventsOptions declares {name}"
        try:
            events = vxevents.get_events(**{name: _good(row)})
        finally:
            vxevents.close_events()
        assert isinstance(events, vxevents.Events)
    # And the other way: every declared option is one Events() knows.
    assert declared <= vxevents.Events._OPTION_NAMES


@pytest.mark.parametrize("row", ROWS, ids=[r["python"] for r in ROWS])
def test_the_tables_bounds_are_enforced_naming_the_option(row):
    for value in _outside(row):
        with pytest.raises(vxevents.VxValueError) as ei:
            vxevents.events_plugin(**{row["python"]: value})
        assert row["python"] in str(ei.value), str(ei.value)[:200]
        assert ei.value.code == ("ESECRET" if row["type"] == "secret" and len(value) < row["min"]
                                 else "EINVAL")
    if row["type"] in ("uint", "size"):
        vxevents.events_plugin(**{row["python"]: row["max"]}).close()
        with pytest.raises(TypeError, match=row["python"]):
            vxevents.events_plugin(**{row["python"]: str(row["min"])})


def test_get_events_checks_rediss_files_with_the_cores_message():
    with pytest.raises(vxevents.VxValueError, match=r"redis_tls_ca: cannot read /nonexistent/ca\.pem") as ei:
        vxevents.get_events(redis="rediss://127.0.0.1:6379", redis_tls_ca="/nonexistent/ca.pem")
    assert ei.value.code == "ETLS"


@pytest.mark.parametrize("compression, negotiated", [(True, True), (False, False)])
def test_compression_reaches_the_core(compression, negotiated):
    # The websockets client offers permessage-deflate; the core takes it unless told not to.
    with vxevents.events_plugin(ping_interval=0, compression=compression) as srv:
        port = srv.listen("127.0.0.1", 0)
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=2) as ws:
            found = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
            assert bool(found) is negotiated


def _sse_messages_until(sock, pred, what: str, buf: list[bytes], timeout: float = 5):
    """Read the raw SSE stream until `pred` holds for its parsed messages; bounded."""
    import json
    import time
    deadline = time.monotonic() + timeout
    while True:
        text = b"".join(buf).decode()
        msgs = [{"id": (re.search(r"^id: (.*)$", b, re.M) or [None, None])[1],
                 "msg": json.loads(re.search(r"^data: (.*)$", b, re.M)[1])}
                for b in text.split("\n\n") if re.search(r"^data: ", b, re.M)]
        if pred(msgs):
            return msgs
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {what}; got {text!r}"
        sock.settimeout(left)
        buf.append(sock.recv(65536))


@pytest.mark.parametrize("history_size, replayed", [(None, 1), (0, 0)])
def test_history_size_reaches_the_core(history_size, replayed):
    options = {} if history_size is None else {"history_size": history_size}
    with vxevents.events_plugin(ping_interval=0, sse_path="/events", **options) as srv:
        port = srv.listen("127.0.0.1", 0)
        req = b"GET /events?channels=h HTTP/1.1\r\nHost: x\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s1:
            s1.sendall(req + b"\r\n")
            buf: list[bytes] = []
            _sse_messages_until(s1, lambda m: any(x["msg"]["type"] == "subscription_succeeded"
                                                  for x in m), "the subscription", buf)
            srv.broadcast("h", "n", 1)
            msgs = _sse_messages_until(s1, lambda m: any(x["msg"].get("event") == "n" for x in m),
                                       "event 1", buf)
            last_id = next(x["id"] for x in msgs if x["msg"].get("event") == "n")
        srv.broadcast("h", "n", 2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s2:
            s2.sendall(req + f"Last-Event-ID: {last_id}\r\n\r\n".encode())
            buf = []
            msgs = _sse_messages_until(s2, lambda m: any(x["msg"]["type"] == "resumed" for x in m),
                                       "resumed", buf)
            assert next(x for x in msgs if x["msg"]["type"] == "resumed")["msg"]["replayed"] == replayed
            assert len([x for x in msgs if x["msg"].get("event") == "n"]) == replayed
