"""Wire-level value formats shared by the server and the client: timestamps and durations.

Ollama writes timestamps as RFC 3339 with nanoseconds and trailing zeros trimmed
(UTC ``Z`` in streamed responses, the local offset in tags/ps), durations as
integer nanoseconds.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

__all__ = ["format_time", "local_time", "now_utc", "ns", "unix_time"]


def _trim_fraction(dt: datetime, nanos: int | None) -> str:
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = nanos if nanos is not None else dt.microsecond * 1000
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base


def now_utc() -> str:
    """Return the current time as Ollama's ``created_at``: UTC, nanoseconds, trailing zeros trimmed."""
    t = time.time_ns()
    dt = datetime.fromtimestamp(t // 1_000_000_000, tz=timezone.utc)
    return _trim_fraction(dt, t % 1_000_000_000) + "Z"


def format_time(dt: datetime) -> str:
    """Format an aware or naive (taken as UTC) datetime as RFC 3339 in UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return _trim_fraction(dt.astimezone(timezone.utc), None) + "Z"


def local_time(dt: datetime | float) -> str:
    """Format a datetime or Unix time with the local UTC offset (``2025-01-02T03:04:05.5+01:00``)."""
    if not isinstance(dt, datetime):
        dt = datetime.fromtimestamp(min(dt, 253402300799.0)).astimezone()
    elif dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone()
    offset = dt.strftime("%z")
    tz = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return _trim_fraction(dt, None) + tz


def unix_time(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


def ns(seconds: float) -> int:
    """Seconds to integer nanoseconds."""
    return int(round(seconds * 1e9))
