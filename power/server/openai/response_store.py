"""Stored responses (``store: true``): what ``previous_response_id``, GET and DELETE ``/v1/responses/{id}`` read.

Each row keeps the response object as it was answered and the conversation it
closes: every input item of the chain so far and this response's output items,
so a follow-up turn re-renders the same prompt it started from (its KV prefix
is reused). The database lives beside the usage database; it is bounded by
count, age and total size, the oldest rows going first, and pruned on every
write. Writes never fail a request: a full disk costs a log line.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from power.config import Settings

__all__ = ["ResponseStore", "StoredResponse"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    response TEXT NOT NULL,
    conversation TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses(created);
"""


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    conversation: list[Any]  # input items of the whole chain, then this response's output items


class ResponseStore:
    """A bounded SQLite table of responses by id."""

    def __init__(self, path: Path | str, *, max_count: int = 10_000, max_age: float = 30 * 86400.0,
                 max_bytes: int = 1 << 30) -> None:
        self.max_count, self.max_age, self.max_bytes = max_count, max_age, max_bytes
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    @classmethod
    def for_settings(cls, settings: Settings) -> ResponseStore:
        return cls(settings.responses_db, max_count=settings.responses_max_count,
                   max_age=settings.responses_max_age, max_bytes=settings.responses_max_bytes)

    def _oldest_kept(self) -> float:
        return time.time() - self.max_age if self.max_age > 0 else float("-inf")

    def put(self, response: dict[str, Any], conversation: list[Any]) -> None:
        """Keep ``response`` under its id, then drop what the bounds no longer allow."""
        conv = json.dumps(conversation, ensure_ascii=False, separators=(",", ":"))
        body = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?)",
                                 (response["id"], time.time(), body, conv, len(body) + len(conv)))
                self._prune()
        except sqlite3.Error as exc:
            log.warning("response not stored id=%s error=%s", response.get("id"), exc)

    def _prune(self) -> None:
        self._db.execute("DELETE FROM responses WHERE created < ?", (self._oldest_kept(),))
        if self.max_count > 0:
            self._db.execute("DELETE FROM responses WHERE id NOT IN "
                             "(SELECT id FROM responses ORDER BY created DESC LIMIT ?)", (self.max_count,))
        if self.max_bytes > 0:
            # the newest rows whose running total of sizes stays within the bound are kept
            self._db.execute("DELETE FROM responses WHERE id IN (SELECT id FROM (SELECT id, SUM(size) OVER "
                             "(ORDER BY created DESC, id) AS total FROM responses) WHERE total > ?)",
                             (self.max_bytes,))

    def get(self, ident: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute("SELECT response, conversation FROM responses WHERE id = ? AND created >= ?",
                                   (ident, self._oldest_kept())).fetchone()
        if row is None:
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]))

    def delete(self, ident: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM responses WHERE id = ?", (ident,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
