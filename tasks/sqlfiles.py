"""Runs the project's SQL files: one DuckDB query per file, bound `$name` parameters only."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import duckdb

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# DuckDB sorts and hashes per thread; below about this much memory per thread a sort of long
# strings (the quarantine's raw text) cannot spill and fails with "Out of Memory"
MIN_BYTES_PER_THREAD = 128 * 2**20
UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def sql_path(name: str) -> Path:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {path} is missing; the sql/ folder ships with the project")
    return path


def sql_text(name: str) -> str:
    return sql_path(name).read_text()


def sql_digest(name: str) -> str:
    """Content hash of a SQL file, stored with each fact so a changed query is visible."""
    return hashlib.sha256(sql_text(name).encode()).hexdigest()[:16]


def connect(db_path: Path | str, memory_limit: str | None = None, **kwargs: Any) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for a pipeline stage. With a memory limit, large ingests spill to a temp
    folder beside the database instead of growing in memory; insertion order is not kept (it is
    not needed: every query orders what it reads) so inserts can stream. A small limit also means
    fewer threads, at least MIN_BYTES_PER_THREAD each, so that what runs can spill."""
    con = duckdb.connect(str(db_path), **kwargs)
    if memory_limit:
        con.execute(f"set memory_limit = '{memory_limit}'")
        threads = con.execute("select current_setting('threads')").fetchall()[0][0]
        con.execute(f"set threads = {max(1, min(int(threads), memory_bytes(memory_limit) // MIN_BYTES_PER_THREAD))}")
        con.execute("set temp_directory = $d", {"d": str(Path(db_path).parent / "duckdb_spill")})
        con.execute("set preserve_insertion_order = false")
    return con


def memory_bytes(limit: str) -> int:
    """'2GB' / '512 MiB' (StageConfig.duckdb_memory_limit's format) as bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*", limit, re.IGNORECASE)
    if not match:
        raise ValueError(f"memory limit {limit!r} is not a size such as 2GB or 512MiB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def load_macros(con: duckdb.DuckDBPyConnection) -> None:
    """sql/macros.sql, then sql/macros_geo.sql (which builds on it)."""
    con.execute(sql_text("macros"))
    con.execute(sql_text("macros_geo"))


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any] | None = None) -> duckdb.DuckDBPyRelation:
    """Run sql/<name>.sql with named parameters and return the relation."""
    load_macros(con)
    query = sql_text(name).strip().rstrip(";")
    return con.sql(query, params=params or None)


def create_table_from_sql(
    con: duckdb.DuckDBPyConnection, table: str, name: str, params: dict[str, Any] | None = None
) -> int:
    load_macros(con)
    query = sql_text(name).strip().rstrip(";")
    con.execute(f'create or replace table "{table}" as {query}', params or None)
    return con.execute(f'select count(*) from "{table}"').fetchall()[0][0]
