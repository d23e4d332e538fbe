"""Usage accounting: every finished request in SQLite, with cost from per-model prices.

Prices come from the config (``[prices."model:tag"] input = 0.5, output = 1.5``,
in currency units per million tokens; a ``"*"`` entry is the default). The
database lives at ``settings.usage_db``; writes are serialised by a lock and
never fail a request (a full disk costs a log line, not an answer).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from power.errors import InvalidRequest

__all__ = ["UsageRecord", "UsageStore", "parse_date"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_duration_ns INTEGER NOT NULL,
    load_duration_ns INTEGER NOT NULL,
    prompt_eval_duration_ns INTEGER NOT NULL,
    eval_duration_ns INTEGER NOT NULL,
    cost REAL NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage(ts);
CREATE INDEX IF NOT EXISTS usage_model ON usage(model, ts);
"""


@dataclass(frozen=True)
class UsageRecord:
    endpoint: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_duration_ns: int = 0
    load_duration_ns: int = 0
    prompt_eval_duration_ns: int = 0
    eval_duration_ns: int = 0
    request_id: str = ""
    cached_tokens: int = 0  # of prompt_tokens, reused from the KV cache (priced as cached input)


def parse_date(text: str | None, *, end: bool = False) -> float | None:
    """``YYYY-MM-DD`` (whole day, UTC), an ISO timestamp, or Unix seconds; None when absent."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            return day.timestamp() + (86400 if end else 0)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    except ValueError:
        raise InvalidRequest(f"invalid date {text[:40]!r}: use YYYY-MM-DD or an ISO 8601 timestamp") from None


class UsageStore:
    """Append-only usage log with range queries."""

    def __init__(self, path: Path | str, prices: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.prices = dict(prices or {})
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(usage)")}
            if "cached_tokens" not in columns:  # a database written before cached counts were kept
                self._db.execute("ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """Price a request; cached prompt tokens cost ``cached_input`` where the price gives one, else ``input``."""
        price = self.prices.get(model) or self.prices.get(model.removesuffix(":latest")) or self.prices.get("*")
        if not isinstance(price, Mapping):
            return 0.0
        try:
            cached = min(max(cached_tokens, 0), prompt_tokens)
            input_price = float(price.get("input", 0))
            cached_price = float(price.get("cached_input", input_price))
            return ((prompt_tokens - cached) * input_price + cached * cached_price +
                    completion_tokens * float(price.get("output", 0))) / 1e6
        except (TypeError, ValueError):
            return 0.0

    def record(self, rec: UsageRecord) -> None:
        cost = self.cost(rec.model, rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO usage (ts, request_id, endpoint, model, prompt_tokens, completion_tokens,"
                    " total_duration_ns, load_duration_ns, prompt_eval_duration_ns, eval_duration_ns, cost,"
                    " cached_tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (time.time(), rec.request_id, rec.endpoint, rec.model, rec.prompt_tokens,
                     rec.completion_tokens, rec.total_duration_ns, rec.load_duration_ns,
                     rec.prompt_eval_duration_ns, rec.eval_duration_ns, cost, rec.cached_tokens))
        except sqlite3.Error as exc:
            log.warning("usage not recorded model=%s error=%s", rec.model, exc)

    def query(self, *, start: float | None = None, end: float | None = None,
              model: str | None = None) -> dict[str, Any]:
        """Totals per model over ``[start, end)``, plus the grand total."""
        where, args = ["1=1"], []
        if start is not None:
            where.append("ts >= ?")
            args.append(start)
        if end is not None:
            where.append("ts < ?")
            args.append(end)
        if model:
            where.append("(model = ? OR model = ?)")
            args += [model, model if ":" in model else model + ":latest"]
        sql = ("SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(total_duration_ns),"
               " SUM(cost), MIN(ts), MAX(ts), SUM(cached_tokens) FROM usage WHERE " + " AND ".join(where) +
               " GROUP BY model ORDER BY model")
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        data = [{
            "model": m, "requests": n, "prompt_tokens": p or 0, "cached_tokens": cached or 0,
            "completion_tokens": c or 0, "total_tokens": (p or 0) + (c or 0), "total_duration": d or 0,
            "cost": round(cost or 0.0, 9), "first": _iso(lo), "last": _iso(hi),
        } for m, n, p, c, d, cost, lo, hi, cached in rows]
        totals = {k: sum(x[k] for x in data) for k in ("requests", "prompt_tokens", "cached_tokens",
                                                       "completion_tokens", "total_tokens", "total_duration",
                                                       "cost")}
        return {"object": "usage", "start": _iso(start), "end": _iso(end), "model": model or None,
                "data": data, "totals": totals}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")
