"""On-disk response cache: a repeated or resumed run replays answers instead of paying twice.

SQLite in WAL mode with synchronous=NORMAL: every `put` is its own committed transaction, so a
run killed at any point keeps every answer it received, and several processes may share one file.
The key is the sha256 of canonical JSON of (API kind, model, messages, parameters that change the
output). The base URL and the key are deliberately not in it: the same model behind another URL
gives the same answer, and a key must never reach a file.

Only successful HTTP responses are stored, including ones whose text then fails validation, so a
resumed run re-asks exactly as the first run did and gets the same cached re-ask answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.errors import storage_error, storage_faults

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the key recipe changes, so old entries are not misread

_SCHEMA = """
create table if not exists responses (
    key text primary key,
    model text not null,
    text text not null,
    input_tokens integer not null,
    output_tokens integer not null,
    created_at text not null
)
"""


def cache_key(kind: str, model: str, messages: list[dict], params: dict[str, Any], base_url: str | None = None) -> str:
    """sha256 hex of canonical JSON of what decides the answer (never the key). The URL is part of
    it only for openai_compatible teachers: two local servers may serve different weights under
    one model id, while a vendor's model id names one model wherever it is reached from."""
    payload = {"format": CACHE_FORMAT, "kind": kind, "model": model, "messages": messages, "params": params}
    if kind == "openai_compatible":
        payload["base_url"] = (base_url or "").rstrip("/")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def connect_cache(path: Path, what: str, **connect_args: Any) -> sqlite3.Connection:
    """A connection to the SQLite cache file at path (made if missing). A damaged file (not a
    database, or failing SQLite's quick_check) is moved aside to `<name>.damaged-<UTC time>` with a
    warning and an empty cache takes its place: a cache only saves work, so losing it must not stop
    a run (the teacher's budget still caps what asking again costs). A disk that refuses the file is
    a one-line StorageError."""
    path = Path(path)
    with storage_faults(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, **connect_args)
        try:
            verdict = db.execute("pragma quick_check").fetchone()[0]
        except sqlite3.OperationalError:
            raise  # busy or locked by another run: not damage (moving it aside would lose that run's writes)
        except sqlite3.DatabaseError as exc:
            if storage_error(exc, path) is not None:
                raise
            verdict = str(exc)
        if verdict == "ok":
            return db
        db.close()
        aside = path.with_name(f"{path.name}.damaged-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
        os.replace(path, aside)
        for suffix in ("-wal", "-shm", "-journal"):  # they belong to the damaged file
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        log.warning("%s cache %s was damaged (%s): moved to %s; starting an empty cache, so what it held is "
                    "computed (or asked and paid for) again", what, path, verdict, aside)
        return sqlite3.connect(path, **connect_args)


@dataclass(frozen=True)
class CachedResponse:
    text: str
    input_tokens: int
    output_tokens: int
    model: str


class ResponseCache:
    """`get(key)` / `put(key, text, input_tokens, output_tokens, model)` over one SQLite file."""

    key = staticmethod(cache_key)

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        # autocommit (isolation_level=None): each INSERT commits alone, which is "one commit per put"
        self._db = connect_cache(self.path, "teacher response", isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> CachedResponse | None:
        row = self._db.execute(
            "select text, input_tokens, output_tokens, model from responses where key = ?", (key,)
        ).fetchone()
        return None if row is None else CachedResponse(row[0], int(row[1]), int(row[2]), row[3])

    def put(self, key: str, text: str, input_tokens: int, output_tokens: int, model: str) -> None:
        self._db.execute(
            "insert or replace into responses values (?, ?, ?, ?, ?, ?)",
            (key, model, text, int(input_tokens), int(output_tokens), datetime.now(timezone.utc).isoformat()),
        )

    def __len__(self) -> int:
        return int(self._db.execute("select count(*) from responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
