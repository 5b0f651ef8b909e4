"""Bad arguments and misuse raise clear exceptions; core codes surface as VxError.code."""

import pytest

import vxevents


def test_bad_channel_name_is_a_value_error_with_code(server):
    with pytest.raises(vxevents.VxValueError, match="invalid channel name") as ei:
        server.broadcast("no spaces allowed", "e", 1)
    assert ei.value.code == "ECHANNEL"
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, vxevents.EventsError)
    with pytest.raises(vxevents.VxValueError):
        server.subscriber_count("x" * 201)
    with pytest.raises(vxevents.VxValueError):
        server.broadcast_to_many(["ok", "not ok"], "e", 1)


def test_non_json_serializable_data_is_a_type_error(server):
    with pytest.raises(TypeError, match="JSON-serializable"):
        server.broadcast("a", "e", {"when": object()})
    with pytest.raises(TypeError, match="JSON-serializable"):
        server.broadcast("a", "e", float("nan"))


def test_bytes_that_are_not_json_are_refused_by_the_core(server):
    with pytest.raises(vxevents.VxValueError) as ei:
        server.broadcast("a", "e", b"{not json")
    assert ei.value.code == "EJSON"


def test_bad_event_name(server):
    with pytest.raises(vxevents.VxValueError) as ei:
        server.broadcast("a", "", 1)
    assert ei.value.code == "EINVAL"
    with pytest.raises(TypeError):
        server.broadcast("a", 5, 1)
    with pytest.raises(TypeError):
        server.broadcast(None, "e", 1)


def test_short_auth_secret_mentions_32():
    with pytest.raises(ValueError, match="32"):
        vxevents.events_plugin(auth_secret="too-short")


def test_option_checks():
    with pytest.raises(TypeError, match="unknown option"):
        vxevents.events_plugin(ping_intervall=5)
    with pytest.raises(ValueError, match="path"):
        vxevents.events_plugin(path="ws")
    with pytest.raises(ValueError):
        vxevents.events_plugin(max_payload=-1)
    with pytest.raises(TypeError, match="authorizer"):
        vxevents.events_plugin(authorizer="yes")


def test_bad_redis_url():
    with pytest.raises(ValueError, match="redis://"):
        vxevents.get_events(redis="http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="redis://"):
        vxevents.events_plugin(redis="rediss://")


def test_listen_twice_and_port_in_use(server):
    with pytest.raises(vxevents.VxError) as ei:
        server.listen("127.0.0.1", 0)
    assert ei.value.code == "EBUSY"
    with vxevents.events_plugin() as other:
        with pytest.raises(vxevents.VxError) as ei:
            other.listen("127.0.0.1", server.port)
        assert ei.value.code in ("EADDRINUSE", "ELISTEN")
    with pytest.raises(ValueError):
        vxevents.events_plugin().listen("127.0.0.1", 70000)


def test_calls_after_close_raise_closed_error():
    srv = vxevents.events_plugin()
    srv.close()
    srv.close()  # idempotent
    assert srv.closed
    with pytest.raises(vxevents.VxClosedError) as ei:
        srv.broadcast("a", "e", 1)
    assert ei.value.code == "ECLOSED"
    with pytest.raises(vxevents.VxClosedError):
        srv.subscriber_count("a")
    with pytest.raises(vxevents.VxClosedError):
        srv.listen("127.0.0.1", 0)


def test_sign_without_secret(server):
    with pytest.raises(vxevents.VxError) as ei:
        server.sign("1.2", "private-a")
    assert ei.value.code == "ESECRET"


def test_core_log_lines_reach_python_logging(server, caplog):
    import logging
    caplog.set_level(logging.DEBUG, logger="vxevents.core")
    with vxevents.events_plugin(log_level="debug") as other:
        with pytest.raises(vxevents.VxError):
            other.listen("127.0.0.1", server.port)
    assert any(r.name == "vxevents.core" and r.levelno == logging.ERROR and "listen" in r.message
               for r in caplog.records)
    with pytest.raises(ValueError, match="log_level"):
        vxevents.events_plugin(log_level="loud")
