"""Store and forward: a bounded FIFO of outgoing messages in SQLite.

While the broker is unreachable, telemetry goes here and is delivered in order on reconnect. When the
bound is reached the oldest messages are dropped, and the drop is counted (persistently) so it can be
reported. A message ``put`` has returned for is on disk (``synchronous=FULL``): a SIGKILL or power cut
afterwards does not lose it. Greengrass' own spooler is in memory, small, and drops QoS 0 while offline,
which is why the service keeps its own.

A spool file that cannot be opened (not a database, corrupt, unreadable) is moved aside
(``<file>.broken-<unix time>``) and a new one is made; where no file can be made at all, the spool lives in memory
(``durable`` False). Either way the loss is counted (``recreated``, kept in the new file) and reported in every
telemetry message, and the service keeps serving: telemetry never stops inference.

Example::

    with Spool("/var/lib/intents/spool.sqlite", max_messages=10_000) as spool:
        spool.put("dt/intents/pi-1/telemetry", b"{...}")
        for msg_id, topic, payload in spool.peek(100):
            if publish(topic, payload):
                spool.ack([msg_id])
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Any, Iterable

from ..errors import SpoolError

__all__ = ["Spool", "SpoolError"]

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('recreated', 0)",
)


def _condition(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "full" in text:
        return "disk_full"
    if "readonly" in text or "read-only" in text:
        return "read_only"
    return "io_error"


def _open(path: str) -> sqlite3.Connection:
    if path != ":memory:" and os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for stmt in _SCHEMA:
            db.execute(stmt)
    except BaseException:
        db.close()
        raise
    return db


class Spool:
    """A bounded, durable FIFO. Thread-safe; one process per file."""

    def __init__(self, path: str | os.PathLike[str], *, max_messages: int = 10_000, recover: bool = True) -> None:
        """Open (or make) the spool at ``path``. With ``recover`` (the default) a file that cannot be opened is moved
        aside and replaced (see the module docstring); without, :class:`SpoolError` is raised."""
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        self.path = os.fspath(path)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        #: False when no file could be made and the spool lives in memory.
        self.durable = True
        #: ``{"reason", "moved_to"}`` when the file could not be opened and was replaced, else None.
        self.recovered: dict[str, Any] | None = None
        try:
            self._db: sqlite3.Connection | None = _open(self.path)
        except (sqlite3.Error, OSError) as exc:
            if not recover:
                raise SpoolError(f"cannot open spool {self.path}: {exc}",
                                 _condition(exc) if isinstance(exc, sqlite3.Error) else "io_error") from None
            self._db = self._recover(exc)

    def _recover(self, error: BaseException) -> sqlite3.Connection:
        moved: str | None = f"{self.path}.broken-{int(time.time())}"
        try:
            if any(word in str(error).lower() for word in ("locked", "busy")):
                # another process holds a healthy file: leave it alone
                raise OSError(f"{self.path} is in use by another process")
            for suffix in ("", "-wal", "-shm"):
                if os.path.lexists(self.path + suffix):
                    os.replace(self.path + suffix, f"{moved}{suffix}")
            db = _open(self.path)
        except (sqlite3.Error, OSError) as exc:
            log.error("telemetry spool %s unusable (%s) and no new one can be made there (%s): keeping telemetry in "
                      "memory until the service restarts", self.path, error, exc)
            moved, self.durable = None, False
            db = _open(":memory:")
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'recreated'")
        self.recovered = {"reason": str(error)[:300], "moved_to": moved}
        if moved is not None:
            log.error("telemetry spool %s could not be opened (%s): moved aside to %s and started anew", self.path,
                      error, moved)
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolError("spool is closed")
        return self._db

    def put(self, topic: str, payload: bytes) -> int:
        """Store one message durably (dropping the oldest beyond the bound); returns its id."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                msg_id = db.execute("INSERT INTO messages (topic, payload) VALUES (?, ?)", (topic, payload)).lastrowid
                excess = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] - self.max_messages
                if excess > 0:
                    db.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)", (excess,))
                    db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,))
                db.execute("COMMIT")
                return int(msg_id)
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise SpoolError(f"cannot store telemetry in {self.path}: {exc}", _condition(exc)) from None

    def peek(self, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """The oldest ``limit`` messages, in order, without removing them."""
        with self._lock:
            try:
                rows = self._conn().execute("SELECT id, topic, payload FROM messages ORDER BY id LIMIT ?", (limit,)).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read spool {self.path}: {exc}", _condition(exc)) from None
        return [(int(i), str(t), bytes(p)) for i, t, p in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """Remove delivered messages."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            try:
                self._conn().executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot update spool {self.path}: {exc}", _condition(exc)) from None

    @property
    def pending(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM messages")

    @property
    def dropped(self) -> int:
        return self._scalar("SELECT value FROM meta WHERE key = 'dropped'")

    @property
    def recreated(self) -> int:
        """How many times a spool file that could not be opened was replaced (its messages lost)."""
        return self._scalar("SELECT value FROM meta WHERE key = 'recreated'")

    def _scalar(self, query: str) -> int:
        with self._lock:
            try:
                row = self._conn().execute(query).fetchone()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read spool {self.path}: {exc}", _condition(exc)) from None
        return int(row[0]) if row is not None else 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
