"""The C extension (use the vxevents package instead)."""

from typing import Any, Callable, Optional, Sequence, Union, final

CORE_VERSION: str
AUTH_TOKEN: int
AUTH_SUBSCRIBE: int
LOG_ERROR: int
LOG_WARN: int
LOG_INFO: int
LOG_DEBUG: int

class VxError(Exception):
    code: str
    errno: int
    # Set on EUNPUBLISHED (from close): broadcasts that never reached Redis.
    unpublished: int

class VxValueError(VxError, ValueError): ...
class VxClosedError(VxError): ...

def strerror(code: int) -> str: ...

_Callback = Optional[Callable[[Any], None]]
_Dispatcher = Callable[[int, int, Optional[str], Optional[str], Optional[str], Optional[str],
                        bytes, bytes, bytes], None]

@final
class Core:
    def __new__(cls, *, path: Optional[str] = ..., ping_interval: int = ...,
                max_payload: int = ..., max_send_queue: int = ..., max_connections: int = ...,
                max_channels_per_connection: int = ..., api_key: Optional[str] = ...,
                auth_secret: Optional[str] = ..., authorize: Optional[_Dispatcher] = ...,
                client_events_per_sec: int = ..., max_member_size: int = ...,
                max_presence_members: int = ...,
                log: Optional[Callable[[int, str], None]] = ..., log_level: int = ...,
                on_client_event: Optional[Callable[[str, str, str, bytes], None]] = ...,
                sse_path: Optional[str] = ..., heartbeat_interval: int = ...,
                retry_interval: int = ..., redis_url: Optional[str] = ...,
                redis_prefix: Optional[str] = ..., redis_backlog_max: int = ...,
                redis_connect_timeout: int = ...) -> "Core": ...
    @property
    def closed(self) -> bool: ...
    def listen(self, host: str, port: int) -> int: ...
    def broadcast(self, channels: Union[str, Sequence[str]], event: str,
                  data: Optional[bytes], except_id: Optional[str] = ...) -> None: ...
    def subscriber_count(self, channel: str, callback: _Callback = ...) -> Any: ...
    def has_subscribers(self, channel: str, callback: _Callback = ...) -> Any: ...
    def presence_members(self, channel: str, callback: _Callback = ...) -> Any: ...
    def channels(self, callback: _Callback = ...) -> Any: ...
    def stats(self, callback: _Callback = ...) -> Any: ...
    def sign(self, socket_id: str, channel: str, channel_data: Optional[str] = ...) -> str: ...
    def auth_reply(self, id: int, authorized: bool, member_json: Optional[str] = ...,
                   error: Optional[str] = ...) -> None: ...
    def close(self, grace_ms: int = ...) -> None: ...
