"""The error types a user sees. Each message says what is wrong and how to fix it."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TidewrightError(Exception):
    """Base class: an error caused by input or configuration, reported in one line."""


class ConfigError(TidewrightError, ValueError):
    """A pipeline config is invalid; the message names the field and the fix."""


class InputError(TidewrightError, ValueError):
    """Source data cannot be used (missing, empty, wrong columns); the message says how to fix it."""


class TeacherError(TidewrightError, RuntimeError):
    """A teacher run produced nothing usable; the message gives the reasons and where the ledger is."""


class RunLockedError(TidewrightError, RuntimeError):
    """Another refresh of the same dataset line holds its lock; the message names that run and the lock."""


class StorageError(TidewrightError):
    """The disk refused a write or read (full, read-only, no permission) or a stored file is damaged;
    the message names the path and the fix."""


# errno -> what to do about it; other OS errors keep their traceback (they are bugs, not faults to explain)
_STORAGE_FIXES = {
    errno.ENOSPC: "the disk is full: free space there (old runs/<id>/ folders, <runs_dir>/stage_cache) or point run.runs_dir at a larger disk",
    errno.EDQUOT: "the disk quota is used up: free space there or point run.runs_dir at another disk",
    errno.EROFS: "the file system is read-only: point run.runs_dir (and the cache paths) at a writable folder",
    errno.EACCES: "permission denied: make the folder writable for this user or point run.runs_dir at one that is",
    errno.EPERM: "operation not permitted: make the folder writable for this user or point run.runs_dir at one that is",
}
# the same faults as DuckDB and SQLite word them (they raise their own exception types)
_STORAGE_TEXTS = {
    "no space left on device": errno.ENOSPC,
    "database or disk is full": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "readonly database": errno.EROFS,
    "permission denied": errno.EACCES,
}
RESUME_HINT = "then start the run again (finished stages and answered teacher calls are reused)"


# a parquet file cut short or overwritten, as DuckDB words it (the path is in the message)
_DAMAGED_PARQUET = re.compile(r"No magic bytes found at end of file '([^']+)'|File '([^']+)' too small to be a Parquet file")
_DAY_PARTITION = re.compile(r"^(.*/date=\d{4}-\d{2}-\d{2})/[^/]+$")


def damaged_file_error(exc: BaseException) -> StorageError | None:
    """A one-line StorageError for a damaged parquet file DuckDB could not read, naming it and the fix:
    for a partition of the day store, delete its date=... folder and ingest that day's files again."""
    if type(exc).__module__.split(".")[0] not in ("duckdb", "_duckdb") or not (found := _DAMAGED_PARQUET.search(str(exc))):
        return None
    path = found.group(1) or found.group(2)
    if day := _DAY_PARTITION.match(path):
        fix = (f"delete the partition folder {day.group(1)} and ingest that day's source files again "
               "(the other days are not touched)")
    else:
        fix = "delete it and run again (a file in a run folder is written again by its stage)"
    return StorageError(f"stored file {path} is damaged ({str(exc).splitlines()[0]}): {fix}")


def storage_error(exc: BaseException, where: str | Path) -> StorageError | None:
    """A one-line StorageError for a full, read-only or forbidden disk (OSError, DuckDB's and SQLite's
    wording alike) or a damaged stored file, naming the file (or `where` when the error does not)
    and the fix; None for anything else."""
    if isinstance(exc, StorageError):
        return exc
    if damaged := damaged_file_error(exc):
        return damaged
    code = exc.errno if isinstance(exc, OSError) else None
    if code not in _STORAGE_FIXES:
        text = str(exc).lower()
        code = next((c for phrase, c in _STORAGE_TEXTS.items() if phrase in text), None)
        if code is None or not isinstance(exc, (OSError, sqlite3.Error)) and type(exc).__module__.split(".")[0] not in ("duckdb", "_duckdb"):
            return None
    path = getattr(exc, "filename", None) or where
    error = StorageError(f"cannot write {path} ({os.strerror(code)}): {_STORAGE_FIXES[code]}; {RESUME_HINT}")
    error.errno = code
    return error


@contextmanager
def storage_faults(where: str | Path) -> Iterator[None]:
    """Re-raise a full, read-only or forbidden disk inside the block as one-line StorageError."""
    try:
        yield
    except Exception as exc:
        error = storage_error(exc, where)
        if error is None or error is exc:
            raise
        raise error from exc
