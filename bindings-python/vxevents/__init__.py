"""vxevents — real-time event broadcasting on the libvxevents C core.

    import vxevents

    # In-process server with a Python authorizer:
    with vxevents.events_plugin(auth_secret=SECRET, authorizer=authorize) as srv:
        port = srv.listen("127.0.0.1", 3030)
        srv.broadcast("orders", "order.created", {"orderId": 1})

    # A worker broadcasting into a fleet of servers through Redis:
    events = vxevents.get_events(redis="redis://127.0.0.1:6379")
    ...
    vxevents.close_events()

Every method is synchronous (the GIL is released while waiting on the core's loop
thread) and has an asyncio twin prefixed with ``a`` (``await srv.asubscriber_count("c")``)
that never blocks the event loop. JavaScript-style camelCase aliases exist for the names
the Node binding uses (``broadcastToMany``, ``subscriberCount``...).

``data`` is serialized with ``json.dumps``. ``bytes``/``bytearray``/``memoryview`` are
taken as JSON text already serialized and passed through (the core checks it is JSON); a
``str`` is a JSON string value unless ``raw=True`` says it is JSON text.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import http.cookies
import inspect
import json
import logging
import os
import threading
import weakref
from typing import (Any, Awaitable, Callable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, TypedDict, Union)

from . import _core
from ._core import VxClosedError, VxError, VxValueError

__all__ = [
    "AuthRequest",
    "Authorizer",
    "AuthorizerResult",
    "Channel",
    "ChannelAuthResult",
    "Events",
    "EventsError",
    "EventsServer",
    "PresenceMember",
    "Stats",
    "VxClosedError",
    "VxError",
    "VxValueError",
    "close_events",
    "events_plugin",
    "get_events",
]

__version__ = "0.1.0"
CORE_VERSION = _core.CORE_VERSION

#: The issue's name for the error base class; the same class as VxError.
EventsError = VxError

log = logging.getLogger("vxevents")



class Channel(NamedTuple):
    """The channel an authorizer is asked about: ``name`` and ``type`` ("public",
    "private" or "presence")."""

    name: str
    type: str


class AuthRequest:
    """The HTTP request behind an authorization (``POST {path}/auth``).

    ``method``, ``url`` (target with query), ``path``, ``query``, ``headers`` (a dict with
    lower-cased names), ``cookies`` (a dict), ``body`` (bytes), ``json`` (the parsed body,
    or None when it is not JSON), ``socket_id`` (from the body)."""

    __slots__ = ("method", "url", "path", "query", "headers", "cookies", "body", "socket_id", "kind",
                 "_json")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes,
                 socket_id: Optional[str], kind: int = _core.AUTH_TOKEN) -> None:
        self.method = method
        self.url = url
        self.path, _, self.query = url.partition("?")
        self.headers = headers
        self.body = body
        self.socket_id = socket_id
        self.kind = kind
        self.cookies: dict[str, str] = {}
        raw = headers.get("cookie")
        if raw:
            jar = http.cookies.SimpleCookie()
            try:
                jar.load(raw)
            except http.cookies.CookieError:
                pass
            self.cookies = {k: m.value for k, m in jar.items()}
        self._json: Any = _UNSET

    @property
    def json(self) -> Any:
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.body) if self.body else None
            except ValueError:
                self._json = None
        return self._json

    def __repr__(self) -> str:
        return f"AuthRequest({self.method} {self.url}, socket_id={self.socket_id!r})"


_UNSET = object()


class PresenceMember(TypedDict):
    """A presence member: ``id`` (str or int) and free ``info``."""

    id: Union[str, int]
    info: Any


class ChannelAuthResult(TypedDict, total=False):
    """What an authorizer may return (``True``/``False`` also work)."""

    authorized: bool
    error: str
    member: PresenceMember


class Stats(TypedDict):
    connections: int
    channels: int
    messages_delivered: int
    bytes_written: int
    slow_consumer_closes: int
    ping_timeouts: int
    rejected_connections: int
    flow_paused_ms: int
    flow_wait_ms: int
    flow_waits: int
    flow_refused: int
    flow_lagging: int
    command_queue_bytes: int
    unsent_bytes: int
    tls_errors: int
    history_bytes: int
    history_streams: int


class PublishResult(TypedDict):
    """The offset a broadcast got in its channel's stream, and the stream's epoch."""

    offset: int
    epoch: str


class ChannelHistory(TypedDict):
    """A channel's stream (DESIGN §12): ``events`` are the event messages as clients get
    them (each with its ``offset``); ``complete`` is False when some after ``since`` are no
    longer kept."""

    channel: str
    epoch: str
    offset: int
    complete: bool
    events: list[dict[str, Any]]


AuthorizerResult = Union[bool, None, ChannelAuthResult, Mapping[str, Any]]
Authorizer = Callable[[Channel, AuthRequest],
                      Union[AuthorizerResult, Awaitable[AuthorizerResult]]]


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _serialize(data: Any, raw: bool) -> Optional[bytes]:
    """The JSON text handed to the core (None means JSON null)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if raw:
        if not isinstance(data, str):
            raise TypeError("raw=True needs data as str or bytes of JSON text")
        return data.encode("utf-8")
    if data is None:
        return None
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"data is not JSON-serializable: {e}") from e


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


class _LoopThread:
    """An asyncio loop on a daemon thread, for async authorizers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="vxevents-asyncio", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


def _future_callback(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future, Callable[[Any], None]]:
    """A future on `loop` and the callback the core's loop thread resolves it with."""
    fut = loop.create_future()

    def settle(value: Any) -> None:
        if fut.done():
            return
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)

    def callback(value: Any) -> None:  # on the core's loop thread, holding the GIL
        try:
            loop.call_soon_threadsafe(settle, value)
        except RuntimeError:  # that event loop is closed: nobody is waiting any more
            pass

    return fut, callback


_live: "weakref.WeakSet[Events]" = weakref.WeakSet()


def _weak_hook(obj: Any, method: str) -> Callable[..., None]:
    """A hook for the core calling ``obj.<method>`` while ``obj`` lives; afterwards it
    raises, which the C side reports and answers (a refused authorization)."""
    ref = weakref.ref(obj)

    def hook(*args: Any) -> None:
        me = ref()
        if me is None:
            raise VxClosedError("instance is gone")
        getattr(me, method)(*args)

    return hook

_PY_LEVELS = {_core.LOG_ERROR: logging.ERROR, _core.LOG_WARN: logging.WARNING,
              _core.LOG_INFO: logging.INFO, _core.LOG_DEBUG: logging.DEBUG}
core_log = logging.getLogger("vxevents.core")


def _core_log(level: int, message: str) -> None:
    """The core's log lines (on its loop thread) go to the ``vxevents.core`` logger."""
    core_log.log(_PY_LEVELS.get(level, logging.INFO), "%s", message)


#: The core's options table: one dict per option (name, python, node, type, min, max,
#: default, help), the same table as ``vxevents-server --help``.
OPTION_TABLE: list[dict[str, Any]] = _core.option_table()
_CORE_OPTIONS = {row["python"]: row for row in OPTION_TABLE if row["python"]}
MIN_SECRET_LENGTH: int = next(r["min"] for r in OPTION_TABLE if r["name"] == "auth_secret")


def _core_text(row: dict[str, Any], value: Any) -> str:
    """A core option's value as the text the core parses; only the Python type is checked
    here (TypeError), the value by the core (VxValueError, a ValueError)."""
    name, kind = row["python"], row["type"]
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
        return "1" if value else "0"
    if kind in ("uint", "size"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        return str(value)
    if name == "allowed_origins" and isinstance(value, (list, tuple)):
        # A list of origins and patterns, or the core's comma list as is.
        for o in value:
            if not isinstance(o, str) or "," in o or not o.strip():
                raise ValueError("allowed_origins must be a list of origins like "
                                 f"'https://app.example.com' or '*.example.com', not {o!r}")
        return ",".join(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


class Events:
    """The events manager: broadcasts and queries on one libvxevents instance."""

    #: Options of the Python layer alone; every other option is a row of the core's table.
    _PYTHON_ONLY = {"driver", "authorizer", "authorizer_workers", "on_client_event",
                    "max_payload_size"}
    _OPTION_NAMES = _PYTHON_ONLY | set(_CORE_OPTIONS)

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - self._OPTION_NAMES
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        driver = options.get("driver") or "ws"
        if driver not in ("ws", "sse"):
            raise ValueError(f"driver must be 'ws' or 'sse', not {driver!r}")
        if options.get("max_payload") is None and options.get("max_payload_size") is not None:
            options["max_payload"] = options["max_payload_size"]
        path = options.get("path")
        sse_path = options.get("sse_path")
        if driver == "sse":
            # As in Node: `path` names the SSE endpoint (default /events). The core keeps
            # serving WebSocket on its own default path beside it.
            if sse_path is not None and path is not None and sse_path != path:
                raise ValueError("with driver='sse' give path or sse_path, not both")
            options["sse_path"], options["path"] = sse_path or path or "/events", None
        authorizer = options.get("authorizer")
        if authorizer is not None and not callable(authorizer):
            raise TypeError("authorizer must be a callable (sync or async)")
        on_client_event = options.get("on_client_event")
        if on_client_event is not None and not callable(on_client_event):
            raise TypeError("on_client_event must be a callable (sync or async)")
        # The core options, as text by name: the core parses and checks them (bounds, the
        # secret's length, the Redis URL...) and its message is the error's.
        settings = {name: _core_text(row, options[name]) for name, row in _CORE_OPTIONS.items()
                    if options.get(name) is not None}

        self._authorizer = authorizer
        self._on_client_event = on_client_event
        self._events_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._auth_workers = int(options.get("authorizer_workers") or 4)
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._aio: Optional[_LoopThread] = None
        self._lock = threading.Lock()
        self._port: Optional[int] = None
        # The core's hooks reach back through weak references, so they do not keep this
        # object alive.
        dispatch = _weak_hook(self, "_dispatch") if authorizer is not None else None
        client_event = (_weak_hook(self, "_dispatch_client_event")
                        if on_client_event is not None else None)

        self._alock: Optional[asyncio.Lock] = None  # abroadcast: waiting for capacity, in order
        self._core = _core.Core(options=settings, authorize=dispatch, log=_core_log,
                                on_client_event=client_event)
        _live.add(self)

    # ---- authorization -------------------------------------------------------------

    def _dispatch(self, req_id: int, kind: int, socket_id: Optional[str], channel: Optional[str],
                  channel_type: Optional[str], method: Optional[str], url: bytes, headers: bytes,
                  body: bytes) -> None:
        """On the core's loop thread, holding the GIL: hand off and return at once."""
        request = AuthRequest(method or "POST", url.decode("latin-1"), _parse_headers(headers),
                              body, socket_id, kind)
        ch = Channel(channel or "", channel_type or "public")
        authorizer = self._authorizer
        if inspect.iscoroutinefunction(authorizer):
            self._run_async(req_id, ch, authorizer(ch, request))
        else:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        self._auth_workers, thread_name_prefix="vxevents-auth")
                executor = self._executor
            executor.submit(self._run_sync, req_id, ch, request)

    def _dispatch_client_event(self, socket_id: str, channel: str, event: str,
                               data: bytes) -> None:
        """On the core's loop thread: queue the hook call on one worker (keeps order)."""
        with self._lock:
            if self._events_executor is None:
                self._events_executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="vxevents-events")
            executor = self._events_executor
        executor.submit(self._run_client_event, socket_id, channel, event, data)

    def _run_client_event(self, socket_id: str, channel: str, event: str, data: bytes) -> None:
        try:
            hook = self._on_client_event
            assert hook is not None
            result = hook(socket_id, channel, event, json.loads(data))
            if inspect.isawaitable(result):
                asyncio.run_coroutine_threadsafe(_as_coroutine(result), self._aio_loop()).result()
        except Exception:
            log.exception("vxevents on_client_event raised for channel %s", channel)

    def _aio_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._aio is None:
                self._aio = _LoopThread()
            return self._aio.loop

    def _run_async(self, req_id: int, ch: Channel, coro: Awaitable[Any]) -> None:
        fut = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self._aio_loop())
        fut.add_done_callback(lambda f: self._answer_future(req_id, ch, f))

    def _run_sync(self, req_id: int, ch: Channel, request: AuthRequest) -> None:
        try:
            authorizer = self._authorizer
            assert authorizer is not None
            result = authorizer(ch, request)
        except Exception:
            log.exception("vxevents authorizer raised for channel %s", ch.name)
            self._reply(req_id, False, None, "authorizer failed")
            return
        if inspect.isawaitable(result):
            self._run_async(req_id, ch, result)
            return
        self._answer(req_id, ch, result)

    def _answer_future(self, req_id: int, ch: Channel, fut: concurrent.futures.Future) -> None:
        try:
            result = fut.result()
        except BaseException:
            log.exception("vxevents authorizer raised for channel %s", ch.name)
            self._reply(req_id, False, None, "authorizer failed")
            return
        self._answer(req_id, ch, result)

    def _answer(self, req_id: int, ch: Channel, result: Any) -> None:
        """Turn an authorizer's answer into vx_auth_reply: True/False, or a mapping (or
        object) with ``authorized``, ``error`` and, for presence, ``member``."""
        if isinstance(result, bool) or result is None:
            ok, error, member = bool(result), None, None
        elif isinstance(result, dict):
            ok, error, member = (bool(result.get("authorized")), result.get("error"),
                                 result.get("member"))
        else:
            ok = bool(getattr(result, "authorized", False))
            error = getattr(result, "error", None)
            member = getattr(result, "member", None)
        member_json = None
        if ok and member is not None:
            try:
                member_json = json.dumps(member, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError):
                log.error("vxevents authorizer returned a member that is not JSON-serializable")
                ok, error = False, "authorizer failed"
        self._reply(req_id, ok, member_json, None if ok else (str(error) if error else None))

    def _reply(self, req_id: int, ok: bool, member_json: Optional[str], error: Optional[str]) -> None:
        try:
            self._core.auth_reply(req_id, ok, member_json, error)
        except VxError as e:
            if e.code not in ("ECLOSED", "ENOTFOUND"):
                log.error("vxevents auth_reply failed: %s", e)

    # ---- broadcasting --------------------------------------------------------------

    def broadcast(self, channel: str, event: str, data: Any = None,
                  except_socket_id: Optional[str] = None, *, raw: bool = False) -> None:
        """Send ``event`` with ``data`` to every subscriber of ``channel`` (except the
        connection ``except_socket_id``). Returns once the core accepted it; thread-safe.
        While the clients are slower than the producer (flow control) it blocks, with the
        GIL released, until the core has room, so a loop of broadcasts paces itself."""
        self._core.broadcast(_check_str("channel", channel), _check_str("event", event),
                             _serialize(data, raw), except_socket_id)

    def broadcast_to_many(self, channels: Sequence[str], event: str, data: Any = None,
                          except_socket_id: Optional[str] = None, *, raw: bool = False) -> None:
        """The same event on several channels (1..100) at once."""
        if isinstance(channels, str):
            raise TypeError("channels must be a list of str (use broadcast() for one channel)")
        names = list(channels)
        for c in names:
            _check_str("channel", c)
        if not names:
            raise ValueError("channels must not be empty")
        self._core.broadcast(names, _check_str("event", event), _serialize(data, raw),
                             except_socket_id)

    def broadcast_except(self, channel: str, event: str, data: Any, except_socket_id: str, *,
                         raw: bool = False) -> None:
        """broadcast() skipping the connection ``except_socket_id`` (e.g. the sender)."""
        _check_str("except_socket_id", except_socket_id)
        self.broadcast(channel, event, data, except_socket_id, raw=raw)

    # ---- queries (sync: the GIL is released while the loop thread answers) ----------

    def subscriber_count(self, channel: str) -> int:
        return self._core.subscriber_count(_check_str("channel", channel))

    def has_subscribers(self, channel: str) -> bool:
        return self._core.has_subscribers(_check_str("channel", channel))

    def channels(self) -> list[str]:
        return self._core.channels()

    def presence_members(self, channel: str) -> list[PresenceMember]:
        return json.loads(self._core.presence_members(_check_str("channel", channel)))

    def publish(self, channel: str, event: str, data: Any = None,
                except_socket_id: Optional[str] = None, *, raw: bool = False) -> PublishResult:
        """broadcast() to one channel that returns the offset it got in the channel's stream
        and the stream's epoch, ``{"offset": n, "epoch": "..."}`` (DESIGN §12): it waits
        (GIL released) until the core assigned it — the loop ran it, or with ``redis``
        Redis's script answered."""
        return self._core.publish(_check_str("channel", channel), _check_str("event", event),
                                  _serialize(data, raw), except_socket_id)

    def history(self, channel: str, since: int = 0, limit: int = 0) -> ChannelHistory:
        """The channel's stream: ``{"channel", "epoch", "offset", "complete", "events"}``,
        its events with offset > ``since`` (oldest first, at most ``limit``; 0: the history
        size). ``complete`` is False when some after ``since`` are no longer kept."""
        _check_history_args(since, limit)
        return json.loads(self._core.history(_check_str("channel", channel), since, limit))

    def stats(self) -> Stats:
        return self._core.stats()

    def metrics(self) -> str:
        """This instance's metrics in Prometheus text format 0.0.4 (what GET /metrics of
        vxevents-server serves), to expose on a route of the application's own."""
        return self._core.metrics()

    def sign(self, socket_id: str, channel: str, channel_data: Any = None) -> str:
        """The auth token for (socket_id, channel[, channel_data]). ``channel_data`` may be a
        str (JSON text, signed as is) or any JSON-serializable value."""
        if channel_data is not None and not isinstance(channel_data, str):
            channel_data = json.dumps(channel_data, separators=(",", ":"), ensure_ascii=False)
        return self._core.sign(_check_str("socket_id", socket_id),
                               _check_str("channel", channel), channel_data)

    # ---- asyncio twins ----------------------------------------------------------------

    async def _asend(self, channels: Any, event: str, data: Optional[bytes],
                     except_socket_id: Optional[str]) -> None:
        # Accepted at once while the core has room; else this task waits (without blocking
        # the event loop) for capacity, behind every abroadcast that began waiting before it.
        lock = self._alock
        if (lock is None or not lock.locked()) and self._core.broadcast(
                channels, event, data, except_socket_id, wait=False):
            return
        if lock is None:
            lock = self._alock = asyncio.Lock()
        async with lock:
            while not self._core.broadcast(channels, event, data, except_socket_id, wait=False):
                fut, cb = _future_callback(asyncio.get_running_loop())
                self._core.capacity(cb)
                await fut

    async def abroadcast(self, channel: str, event: str, data: Any = None,
                         except_socket_id: Optional[str] = None, *, raw: bool = False) -> None:
        """broadcast() for asyncio: awaits capacity instead of blocking the event loop."""
        await self._asend(_check_str("channel", channel), _check_str("event", event),
                          _serialize(data, raw), except_socket_id)

    async def abroadcast_to_many(self, channels: Sequence[str], event: str, data: Any = None,
                                 except_socket_id: Optional[str] = None, *,
                                 raw: bool = False) -> None:
        if isinstance(channels, str):
            raise TypeError("channels must be a list of str (use abroadcast() for one channel)")
        names = list(channels)
        for c in names:
            _check_str("channel", c)
        if not names:
            raise ValueError("channels must not be empty")
        await self._asend(names, _check_str("event", event), _serialize(data, raw),
                          except_socket_id)

    async def abroadcast_except(self, channel: str, event: str, data: Any,
                                except_socket_id: str, *, raw: bool = False) -> None:
        _check_str("except_socket_id", except_socket_id)
        await self.abroadcast(channel, event, data, except_socket_id, raw=raw)

    async def asubscriber_count(self, channel: str) -> int:
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.subscriber_count(_check_str("channel", channel), cb)
        return await fut

    async def ahas_subscribers(self, channel: str) -> bool:
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.has_subscribers(_check_str("channel", channel), cb)
        return await fut

    async def achannels(self) -> list[str]:
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.channels(cb)
        return await fut

    async def apresence_members(self, channel: str) -> list[PresenceMember]:
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.presence_members(_check_str("channel", channel), cb)
        return json.loads(await fut)

    async def apublish(self, channel: str, event: str, data: Any = None,
                       except_socket_id: Optional[str] = None, *,
                       raw: bool = False) -> PublishResult:
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.publish(_check_str("channel", channel), _check_str("event", event),
                           _serialize(data, raw), except_socket_id, cb)
        return await fut

    async def ahistory(self, channel: str, since: int = 0, limit: int = 0) -> ChannelHistory:
        _check_history_args(since, limit)
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.history(_check_str("channel", channel), since, limit, cb)
        return json.loads(await fut)

    async def astats(self) -> Stats:
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.stats(cb)
        return await fut

    async def ametrics(self) -> str:
        fut, cb = _future_callback(asyncio.get_running_loop())
        self._core.metrics(cb)
        return await fut

    async def asign(self, socket_id: str, channel: str, channel_data: Any = None) -> str:
        return self.sign(socket_id, channel, channel_data)

    async def aclose(self, grace_ms: int = 0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close, grace_ms)

    # ---- lifetime ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._core.closed

    def close(self, grace_ms: int = 0) -> None:
        """Close every client with 1001 (giving them up to ``grace_ms``, 0 = 1 s) and stop
        the loop thread. With ``redis``, every broadcast accepted before is published first
        (waiting for the connection and Redis's acknowledgements up to ``grace_ms``, 0 =
        ``redis_connect_timeout``); raises VxError with ``code == "EUNPUBLISHED"`` and
        ``unpublished`` (a count, per channel) when some could not be. The instance is
        closed either way. Idempotent."""
        try:
            self._core.close(grace_ms)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            executors = (self._executor, self._events_executor)
            self._executor = self._events_executor = None
            aio, self._aio = self._aio, None
        for executor in executors:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        if aio is not None:
            aio.stop()
        _live.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ---- JavaScript-style aliases -----------------------------------------------------

    broadcastToMany = broadcast_to_many
    broadcastExcept = broadcast_except
    subscriberCount = subscriber_count
    hasSubscribers = has_subscribers
    presenceMembers = presence_members


def _check_history_args(since: Any, limit: Any) -> None:
    for name, v in (("since", since), ("limit", limit)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"history {name} must be a non-negative int (got {v!r})")
    if since >= 2 ** 64:
        raise ValueError("history since must be below 2**64")
    if limit > 10000:
        raise ValueError(f"history limit must be at most 10000 (got {limit})")


class EventsServer(Events):
    """An in-process server (``events_plugin(...)``): ``listen(host, port)`` serves
    WebSocket on ``path`` (default /ws), ``POST {path}/auth`` (the authorizer), with
    ``sse_path`` (or ``driver="sse"``) Server-Sent Events and its subscribe/unsubscribe
    routes (the authorizer again), and with ``api_key`` the HTTP publish API."""

    def listen(
        self, host: str = "127.0.0.1", port: int = 3030, tls: Optional[Mapping[str, Any]] = None
    ) -> int:
        """Bind and serve; returns the bound port (port 0 picks a free one).

        ``tls={"cert": ..., "key": ..., "ca": ...}`` serves TLS only on the port (wss://
        and https://, ALPN http/1.1). Each value is PEM text (str or bytes starting
        ``-----BEGIN``) or a PEM file's path (str or os.PathLike); ``cert`` may hold the
        chain; with ``ca`` clients must present a certificate it signed. Files that cannot
        be used raise VxValueError (``code == "ETLS"``) saying why."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be an int in 0..65535")
        host = _check_str("host", host)
        if tls is not None:
            self._core.configure_tls(*_tls_files(tls))
        self._port = self._core.listen(host, port)
        return self._port

    async def alisten(
        self, host: str = "127.0.0.1", port: int = 3030, tls: Optional[Mapping[str, Any]] = None
    ) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self.listen, host, port, tls)

    @property
    def port(self) -> Optional[int]:
        return self._port


def _tls_files(tls: Mapping[str, Any]) -> Tuple[str, str, Optional[str]]:
    if not isinstance(tls, Mapping):
        raise TypeError("tls must be a mapping {'cert': ..., 'key': ..., 'ca': ...}")
    unknown = set(tls) - {"cert", "key", "ca"}
    if unknown:
        raise VxValueError(f"unknown tls option {sorted(unknown)[0]!r} (cert, key, ca)")
    out: List[Optional[str]] = []
    for name in ("cert", "key", "ca"):
        v = tls.get(name)
        if v is None:
            if name != "ca":
                raise VxValueError(f"tls[{name!r}] is required (PEM text or a file path)")
            out.append(None)
            continue
        if isinstance(v, (bytes, bytearray)):
            v = bytes(v).decode("utf-8")
        elif isinstance(v, os.PathLike):
            v = os.fspath(v)
        if not isinstance(v, str) or not v or "\0" in v:
            raise TypeError(f"tls[{name!r}] must be PEM text (str or bytes) or a file path")
        out.append(v)
    return out[0] or "", out[1] or "", out[2]


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def events_plugin(**options: Any) -> EventsServer:
    """A server instance; options in snake_case: driver ("ws" or "sse"), path, sse_path,
    auth_secret, authorizer, ping_interval / heartbeat_interval / retry_interval (ms),
    max_payload (alias max_payload_size), max_send_queue, max_connections,
    max_channels_per_connection, api_key, client_events_per_sec, on_client_event,
    max_member_size, max_presence_members, compression, history_size, history_ttl,
    history_max_bytes, redis, redis_prefix,
    redis_backlog_max, redis_connect_timeout, redis_tls_ca / redis_tls_cert / redis_tls_key /
    redis_tls_verify (rediss://), log_level, authorizer_workers. Options are
    checked here, by the core's options table (``OPTION_TABLE``: the bounds and defaults of
    ``vxevents-server --help``): a too-short ``auth_secret`` raises VxValueError mentioning
    32; a wrong Python type raises TypeError."""
    return EventsServer(**options)


_singleton: Optional[Events] = None
_singleton_lock = threading.Lock()


def get_events(**options: Any) -> Events:
    """The process-wide manager, created on first call with ``options`` (later calls
    return the same one and ignore their options). With ``redis="redis://host:6379"`` its
    broadcasts reach every server sharing that Redis (the worker use case); without, it is
    a local instance. It serves nothing itself (use events_plugin() for a server).

    With Redis, queries (``subscriber_count``...) answer for the cluster: made before the
    connection is up they wait for it, up to ``redis_connect_timeout`` ms (default 5000),
    then raise VxError with ``code == "EUNAVAILABLE"``. ``close_events()`` publishes every
    broadcast accepted before it and raises (``code == "EUNPUBLISHED"``) if some could not
    be."""
    global _singleton
    with _singleton_lock:
        if _singleton is None or _singleton.closed:
            _singleton = Events(**options)
        return _singleton


def close_events() -> None:
    """Close the manager from get_events(), if any. Raises like Events.close() when
    broadcasts could not be published to Redis."""
    global _singleton
    with _singleton_lock:
        events, _singleton = _singleton, None
    if events is not None:
        events.close()


@atexit.register
def _close_all() -> None:
    # Close live instances while the interpreter is whole: the core's loop thread may need
    # the GIL to deliver final callbacks, which a finalizing interpreter would not allow.
    for events in list(_live):
        try:
            events.close()
        except VxError as e:
            log.error("vxevents: closing at exit: %s", e)
        except Exception:
            pass
