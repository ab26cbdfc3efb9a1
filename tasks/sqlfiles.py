"""Runs the project's SQL files: one DuckDB query per file, bound `$name` parameters only."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


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
    not needed: every query orders what it reads) so inserts can stream."""
    con = duckdb.connect(str(db_path), **kwargs)
    if memory_limit:
        con.execute(f"set memory_limit = '{memory_limit}'")
        con.execute("set temp_directory = $d", {"d": str(Path(db_path).parent / "duckdb_spill")})
        con.execute("set preserve_insertion_order = false")
    return con


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
