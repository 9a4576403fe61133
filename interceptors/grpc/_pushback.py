"""The delay a gRPC server asks for in its trailing metadata, from any of the three places it may put it.

In order of precedence: ``grpc-retry-pushback-ms`` (milliseconds; negative or malformed means "do not retry", as
in gRPC's retry design A6), ``google.rpc.RetryInfo`` inside ``grpc-status-details-bin``, and ``retry-after``
(seconds, as in HTTP). The rich status is decoded with googleapis-common-protos when it is installed (the
``status`` extra), else with the protobuf runtime alone, from a minimal copy of the two message types. Its
message is not compared with the call's ``grpc-message``: a proxy may rewrite one and not the other, and the
delay a server asked for still holds. Its code is: gRPC requires the rich status to be the call's, so one for
another code (a proxy rewrote the status) is not the call's and its RetryInfo is ignored, as is a RetryInfo whose
delay is no valid proto3 Duration. Every delay is capped at :data:`MAX_PUSHBACK` (what the header can carry).
Nothing read off the wire is trusted: what cannot be parsed is ignored and logged once per method and header.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory

PUSHBACK_MS = "grpc-retry-pushback-ms"
STATUS_DETAILS = "grpc-status-details-bin"
RETRY_AFTER = "retry-after"
DO_NOT_RETRY = -1.0
RETRY_INFO = "google.rpc.RetryInfo"

MAX_PUSHBACK_MS = 2**31 - 1
"""The longest pushback ``grpc-retry-pushback-ms`` carries: an int32 of milliseconds (gRFC A6), about 24.8 days.
Within the policies' ``MAX_SECONDS`` (a year), so any ``max_pushback`` may be set to it."""

MAX_PUSHBACK = MAX_PUSHBACK_MS / 1000
""":data:`MAX_PUSHBACK_MS` in seconds: every delay read is capped there, and so is every delay forwarded."""

_MAX_DURATION_SECONDS = 315_576_000_000
"""A proto3 Duration's seconds lie within 10 000 years either way."""

_log = logging.getLogger("interceptors")
_warned: set[tuple[str, str]] = set()


def pushback_seconds(call: Any, method: str) -> float | None:
    """Seconds the server asked to wait in ``call``'s trailers, ``DO_NOT_RETRY``, or None when it asked nothing
    (or nothing that could be read). Never raises."""
    try:
        found: dict[str, str | bytes] = {}
        for key, value in call.trailing_metadata() or ():
            if key in (PUSHBACK_MS, STATUS_DETAILS, RETRY_AFTER):
                found.setdefault(key, value)
    except Exception as error:
        _warn(method, "trailing metadata", f"ignoring the trailing metadata of {method}: {error!r}")
        return None
    if PUSHBACK_MS in found:
        return _pushback_ms(found[PUSHBACK_MS], method)
    if STATUS_DETAILS in found:
        delay = _retry_info_delay(found[STATUS_DETAILS], method, _code_of(call))
        if delay is not None:
            return min(delay, MAX_PUSHBACK)
    if RETRY_AFTER in found:
        delay = _retry_after(found[RETRY_AFTER], method)
        return None if delay is None else min(delay, MAX_PUSHBACK)
    return None


def _code_of(call: Any) -> int | None:
    """The number of ``call``'s status code, or None when it cannot be told. Never raises."""
    try:
        code = call.code()
    except Exception:
        return None
    if inspect.iscoroutine(code):  # an aio call, not an error: its status is not known here
        code.close()
        return None
    return code.value[0] if isinstance(code, grpc.StatusCode) else None


def _text(value: str | bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _pushback_ms(value: str | bytes, method: str) -> float:
    text = _text(value).strip()
    try:
        milliseconds = int(text)
    except ValueError:
        _warn(method, PUSHBACK_MS, f"malformed {PUSHBACK_MS} {text[:40]!r} from {method}: not retrying, as gRPC does")
        return DO_NOT_RETRY
    return DO_NOT_RETRY if milliseconds < 0 else min(milliseconds, MAX_PUSHBACK_MS) / 1000


def _retry_after(value: str | bytes, method: str) -> float | None:
    text = _text(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds < float("inf")):
        _warn(method, RETRY_AFTER, f"ignoring {RETRY_AFTER} {text[:40]!r} from {method}: not a number of seconds >= 0")
        return None
    return seconds


def _retry_info_delay(value: str | bytes, method: str, code: int | None) -> float | None:
    """The delay of the RetryInfo in a rich status for the call's status ``code``; None when there is none, or
    none to trust (garbage, another status, a delay that is no valid Duration: logged once)."""
    try:
        if not isinstance(value, bytes):
            raise ValueError("not binary")
        status = _parse_status(value)
        for detail in status.details:
            if detail.type_url.rpartition("/")[2] == RETRY_INFO:
                if status.code != code:
                    raise ValueError(
                        f"its RetryInfo is for status code {status.code}, the call's is {code}: gRPC requires "
                        "them to match (a proxy may have rewritten the status)"
                    )
                return _seconds(_parse_retry_info(detail.value).retry_delay)
    except Exception as error:  # DecodeError, or anything else a malformed message may raise
        _warn(method, STATUS_DETAILS, f"ignoring {STATUS_DETAILS} from {method}: {error!r}")
    return None


def _seconds(delay: Any) -> float:
    """A RetryInfo's delay in seconds: a valid proto3 Duration (nanos within a second, of the seconds' sign;
    seconds within 10 000 years), not negative. Raises ValueError for anything else."""
    seconds, nanos = delay.seconds, delay.nanos
    if (
        not -999_999_999 <= nanos <= 999_999_999
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
        or not -_MAX_DURATION_SECONDS <= seconds <= _MAX_DURATION_SECONDS
    ):
        raise ValueError(f"RetryInfo delay is no valid Duration: seconds={seconds}, nanos={nanos}")
    total: float = seconds + nanos / 1e9
    if total < 0:
        raise ValueError(f"negative RetryInfo delay {total}s")
    return total


def capped_retry_after(value: str | bytes) -> str | bytes:
    """A ``retry-after`` value to forward: as it was, or :data:`MAX_PUSHBACK` whole seconds when it asks longer."""
    delay = _retry_after(value, "a forwarded status")
    return str(int(MAX_PUSHBACK)) if delay is not None and delay > MAX_PUSHBACK else value


def with_retry_delay(value: bytes, seconds: float | None) -> bytes:
    """The rich status ``value`` saying ``seconds`` in its one RetryInfo (none when None), its other details as
    they were, in their order; ``value`` itself when it says just that already."""
    status = _parse_status(value)
    details = list(status.details)
    found = [i for i, d in enumerate(details) if d.type_url.rpartition("/")[2] == RETRY_INFO]
    if seconds is None and not found:
        return value
    if seconds is not None and len(found) == 1:
        with contextlib.suppress(Exception):  # garbage, or no valid Duration: rewritten below
            if _seconds(_parse_retry_info(details[found[0]].value).retry_delay) == seconds:
                return value
    retry_info = None
    if seconds is not None:
        retry_info = any_pb2.Any()
        delay = _RetryInfo()
        delay.retry_delay.FromNanoseconds(round(seconds * 1e9))
        retry_info.Pack(delay)
    del status.details[:]
    for index, detail in enumerate(details):
        if index not in found:
            status.details.add().CopyFrom(detail)
        elif retry_info is not None and index == found[0]:
            status.details.add().CopyFrom(retry_info)
    if retry_info is not None and not found:
        status.details.add().CopyFrom(retry_info)
    return bytes(status.SerializeToString())


def _warn(method: str, key: str, message: str) -> None:
    if (method, key) not in _warned and len(_warned) < 1000:  # once per method and key: a bad server is loud
        _warned.add((method, key))
        _log.warning(message)


def _minimal_rpc_types() -> tuple[Any, Any]:
    """google.rpc.Status and google.rpc.RetryInfo, built in a private pool from their field numbers."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (any_pb2, duration_pb2):
        pool.AddSerializedFile(dependency.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="interceptors/google_rpc_minimal.proto",
        package="google.rpc",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    status = file.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    status.field.add(
        name="details", number=3, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED, type_name=".google.protobuf.Any"
    )
    retry_info = file.message_type.add(name="RetryInfo")
    retry_info.field.add(
        name="retry_delay",
        number=1,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.RetryInfo")),
    )


def _rich_status_types() -> tuple[Any, Any]:
    """google.rpc.Status and RetryInfo: googleapis-common-protos' classes if installed."""
    try:
        from google.rpc import error_details_pb2, status_pb2
    except ImportError:  # without the `status` extra
        return _minimal_rpc_types()
    return status_pb2.Status, error_details_pb2.RetryInfo


_Status, _RetryInfo = _rich_status_types()
_parse_status: Callable[[bytes], Any] = _Status.FromString
_parse_retry_info: Callable[[bytes], Any] = _RetryInfo.FromString


def is_status_of(value: object, code: int, message: str) -> bool:
    """Whether ``value`` is a ``grpc-status-details-bin`` for the status (``code``, ``message``). Never raises."""
    try:
        status = _parse_status(value) if isinstance(value, bytes) else None
    except Exception:  # DecodeError, or anything else a malformed message may raise
        return False
    return status is not None and status.code == code and status.message == message


def retry_info_details(code: int, message: str, seconds: float) -> bytes:
    """A ``grpc-status-details-bin`` value: the status (``code``, ``message``) with a RetryInfo asking for a delay
    of ``seconds``."""
    retry_info = _RetryInfo()
    retry_info.retry_delay.FromNanoseconds(round(seconds * 1e9))
    status = _Status(code=code, message=message)
    status.details.add().Pack(retry_info)
    return bytes(status.SerializeToString())
