"""The Python options and the core's options table cannot drift: every table row with a
Python name is accepted by get_events() / events_plugin() and declared in the stub's
EventsOptions, and the table's bounds are the ones enforced (min-1 and max+1 refused with
the option named)."""

from __future__ import annotations

import ast
import pathlib

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


def test_the_table_reaches_python_with_compression_and_sse_history():
    names = {r["python"] for r in ROWS}
    assert {"compression", "sse_history", "auth_secret", "redis", "log_level"} <= names


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


def test_get_events_refuses_rediss_with_the_cores_message():
    with pytest.raises(vxevents.VxValueError, match=r"redis .*rediss:// is not supported yet"):
        vxevents.get_events(redis="rediss://127.0.0.1:6379")


@pytest.mark.parametrize("compression, negotiated", [(True, True), (False, False)])
def test_compression_reaches_the_core(compression, negotiated):
    # The websockets client offers permessage-deflate; the core takes it unless told not to.
    with vxevents.events_plugin(ping_interval=0, compression=compression) as srv:
        port = srv.listen("127.0.0.1", 0)
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=2) as ws:
            found = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
            assert bool(found) is negotiated
