import os
from typing import (Any, Awaitable, Callable, Literal, Mapping, NamedTuple, Optional, Sequence,
                    TypedDict, Union)

from typing_extensions import Unpack

from ._core import VxClosedError as VxClosedError
from ._core import VxError as VxError
from ._core import VxValueError as VxValueError

__all__ = ["AuthRequest", "Authorizer", "AuthorizerResult", "Channel", "ChannelAuthResult",
           "Events", "EventsError", "EventsServer", "PresenceMember", "Stats", "VxClosedError",
           "VxError", "VxValueError", "close_events", "events_plugin", "get_events"]

__version__: str
CORE_VERSION: str
EventsError = VxError
MIN_SECRET_LENGTH: int
#: The core's options table (bounds, defaults, help), as ``vxevents-server --help`` shows it.
OPTION_TABLE: list[dict[str, Any]]

class Channel(NamedTuple):
    name: str
    type: Literal["public", "private", "presence"]

class AuthRequest:
    method: str
    url: str
    path: str
    query: str
    headers: dict[str, str]
    cookies: dict[str, str]
    body: bytes
    socket_id: Optional[str]
    kind: int
    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes,
                 socket_id: Optional[str], kind: int = ...) -> None: ...
    @property
    def json(self) -> Any: ...

class PresenceMember(TypedDict):
    id: Union[str, int]
    info: Any

class ChannelAuthResult(TypedDict, total=False):
    authorized: bool
    error: str
    member: PresenceMember

AuthorizerResult = Union[bool, None, ChannelAuthResult, Mapping[str, Any]]
Authorizer = Callable[[Channel, AuthRequest],
                      Union[AuthorizerResult, Awaitable[AuthorizerResult]]]

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
    offset: int
    epoch: str

class ChannelHistory(TypedDict):
    channel: str
    epoch: str
    offset: int
    complete: bool
    events: list[dict[str, Any]]

class _TlsRequired(TypedDict):
    cert: Union[str, bytes, "os.PathLike[str]"]
    key: Union[str, bytes, "os.PathLike[str]"]

class TlsFiles(_TlsRequired, total=False):
    """listen(tls=...): PEM text or PEM files' paths; with ``ca`` clients need a certificate."""
    ca: Union[str, bytes, "os.PathLike[str]"]

class EventsOptions(TypedDict, total=False):
    """The options of Events(), events_plugin() and get_events(): a misspelt or mistyped
    option is a type error (and a TypeError / ValueError at run time). For type checkers only
    (``if TYPE_CHECKING: from vxevents import EventsOptions``)."""
    driver: Literal["ws", "sse"]
    path: str
    sse_path: Optional[str]
    heartbeat_interval: int
    retry_interval: int
    on_client_event: Optional[Callable[[str, str, str, Any], Any]]
    redis: Optional[str]
    redis_prefix: str
    redis_backlog_max: int
    redis_connect_timeout: int
    redis_tls_ca: Optional[str]
    redis_tls_cert: Optional[str]
    redis_tls_key: Optional[str]
    redis_tls_verify: bool
    auth_secret: Optional[str]
    authorizer: Optional[Authorizer]
    authorizer_workers: int
    ping_interval: int
    max_payload: int
    max_payload_size: int
    max_send_queue: int
    max_connections: int
    max_channels_per_connection: int
    api_key: Optional[str]
    client_events_per_sec: int
    max_member_size: int
    max_presence_members: int
    compression: bool
    history_size: int
    history_ttl: int
    history_max_bytes: int
    flow_high_water: int
    flow_low_water: int
    max_command_queue: int
    slow_consumer_ms: int
    socket_send_buffer: int
    publish_wait: int
    allowed_origins: Union[str, Sequence[str], None]
    metrics: bool
    metrics_token: Optional[str]
    log_level: Optional[Literal["error", "warn", "info", "debug"]]

class Events:
    def __init__(self, *, driver: Literal["ws", "sse"] = ..., path: str = ...,
                 sse_path: Optional[str] = ..., heartbeat_interval: int = ...,
                 retry_interval: int = ...,
                 on_client_event: Optional[Callable[[str, str, str, Any], Any]] = ...,
                 redis: Optional[str] = ..., redis_prefix: str = ...,
                 redis_backlog_max: int = ..., redis_connect_timeout: int = ...,
                 redis_tls_ca: Optional[str] = ..., redis_tls_cert: Optional[str] = ...,
                 redis_tls_key: Optional[str] = ..., redis_tls_verify: bool = ...,
                 auth_secret: Optional[str] = ...,
                 authorizer: Optional[Authorizer] = ..., authorizer_workers: int = ...,
                 ping_interval: int = ..., max_payload: int = ..., max_payload_size: int = ...,
                 max_send_queue: int = ..., max_connections: int = ...,
                 max_channels_per_connection: int = ..., api_key: Optional[str] = ...,
                 client_events_per_sec: int = ..., max_member_size: int = ...,
                 max_presence_members: int = ..., compression: bool = ...,
                 history_size: int = ..., history_ttl: int = ...,
                 history_max_bytes: int = ...,
                 flow_high_water: int = ...,
                 flow_low_water: int = ..., max_command_queue: int = ...,
                 slow_consumer_ms: int = ..., socket_send_buffer: int = ...,
                 publish_wait: int = ...,
                 allowed_origins: Union[str, Sequence[str], None] = ...,
                 metrics: bool = ..., metrics_token: Optional[str] = ...,
                 log_level: Optional[Literal["error", "warn", "info", "debug"]] = ...) -> None: ...
    @property
    def closed(self) -> bool: ...
    def broadcast(self, channel: str, event: str, data: Any = ...,
                  except_socket_id: Optional[str] = ..., *, raw: bool = ...) -> None: ...
    def broadcast_to_many(self, channels: Sequence[str], event: str, data: Any = ...,
                          except_socket_id: Optional[str] = ..., *, raw: bool = ...) -> None: ...
    def broadcast_except(self, channel: str, event: str, data: Any, except_socket_id: str, *,
                         raw: bool = ...) -> None: ...
    def subscriber_count(self, channel: str) -> int: ...
    def has_subscribers(self, channel: str) -> bool: ...
    def channels(self) -> list[str]: ...
    def presence_members(self, channel: str) -> list[PresenceMember]: ...
    def publish(self, channel: str, event: str, data: Any = ...,
                except_socket_id: Optional[str] = ..., *, raw: bool = ...) -> PublishResult: ...
    def history(self, channel: str, since: int = ..., limit: int = ...) -> ChannelHistory: ...
    def stats(self) -> Stats: ...
    def metrics(self) -> str: ...
    def sign(self, socket_id: str, channel: str, channel_data: Any = ...) -> str: ...
    def close(self, grace_ms: int = ...) -> None: ...
    async def abroadcast(self, channel: str, event: str, data: Any = ...,
                         except_socket_id: Optional[str] = ..., *, raw: bool = ...) -> None: ...
    async def abroadcast_to_many(self, channels: Sequence[str], event: str, data: Any = ...,
                                 except_socket_id: Optional[str] = ..., *,
                                 raw: bool = ...) -> None: ...
    async def abroadcast_except(self, channel: str, event: str, data: Any,
                                except_socket_id: str, *, raw: bool = ...) -> None: ...
    async def asubscriber_count(self, channel: str) -> int: ...
    async def ahas_subscribers(self, channel: str) -> bool: ...
    async def achannels(self) -> list[str]: ...
    async def apresence_members(self, channel: str) -> list[PresenceMember]: ...
    async def apublish(self, channel: str, event: str, data: Any = ...,
                       except_socket_id: Optional[str] = ..., *,
                       raw: bool = ...) -> PublishResult: ...
    async def ahistory(self, channel: str, since: int = ...,
                       limit: int = ...) -> ChannelHistory: ...
    async def astats(self) -> Stats: ...
    async def ametrics(self) -> str: ...
    async def asign(self, socket_id: str, channel: str, channel_data: Any = ...) -> str: ...
    async def aclose(self, grace_ms: int = ...) -> None: ...
    def __enter__(self) -> "Events": ...
    def __exit__(self, *exc: Any) -> None: ...
    async def __aenter__(self) -> "Events": ...
    async def __aexit__(self, *exc: Any) -> None: ...
    broadcastToMany = broadcast_to_many
    broadcastExcept = broadcast_except
    subscriberCount = subscriber_count
    hasSubscribers = has_subscribers
    presenceMembers = presence_members

class EventsServer(Events):
    def listen(self, host: str = ..., port: int = ...,
               tls: Optional[TlsFiles] = ...) -> int: ...
    async def alisten(self, host: str = ..., port: int = ...,
                      tls: Optional[TlsFiles] = ...) -> int: ...
    @property
    def port(self) -> Optional[int]: ...
    def __enter__(self) -> "EventsServer": ...
    async def __aenter__(self) -> "EventsServer": ...

def events_plugin(**options: Unpack[EventsOptions]) -> EventsServer: ...
def get_events(**options: Unpack[EventsOptions]) -> Events: ...
def close_events() -> None: ...
