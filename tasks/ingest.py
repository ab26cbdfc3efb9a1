"""Ingest: every source file of a run into the run's DuckDB file as typed rows (table typed_ais,
sql/stg_typed.sql) over the raw contract of tasks/sources/raw.py (raw_ais), with unreadable lines
and records quarantined."""

from __future__ import annotations

import glob
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from tasks.artifacts import QUARANTINE_COLUMNS
from tasks.errors import InputError
from tasks.sources.noaa import (
    bare_carriage_return,
    check_noaa_csv,
    malformed_rows,
    noaa_csv_view,
    read_parquet_source,
    without_bare_carriage_returns,
)
from tasks.sources.raw import NOAA_COLUMNS, SourceResult, check_source_file, create_raw_table
from tasks.sqlfiles import connect, create_table_from_sql

__all__ = ["NOAA_COLUMNS", "IngestResult", "check_noaa_csv", "ingest_files", "ingest_noaa_csv", "source_files"]

# file name endings each source kind reads when source.path is a folder
SOURCE_SUFFIXES = {
    "noaa_csv": (".csv", ".csv.gz", ".zip"),
    "dma_csv": (".csv", ".csv.gz"),
    "nmea": (".nmea", ".txt", ".log", ".ais"),
    "parquet": (".parquet",),
}


@dataclass(frozen=True)
class IngestResult:
    db_path: Path
    files: list[Path]
    rows: int           # records or data lines read: loaded + quarantined at ingest
    malformed: int      # quarantined at ingest (unreadable lines, records that are not positions)
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)


def source_files(kind: str, path: Path) -> list[Path]:
    """source.path may be one file, a folder (its files of the kind, sorted) or a glob pattern."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    elif Path(path).is_dir():
        files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.name.lower().endswith(SOURCE_SUFFIXES[kind]))
    else:
        files = [Path(path)]
    if not files:
        raise InputError(f"source.path {path} matches no {kind} files ({', '.join(SOURCE_SUFFIXES[kind])}); check the path")
    for f in files:
        check_source_file(f)
    return files


def _read(kind: str, path: Path, con: duckdb.DuckDBPyConnection) -> SourceResult:
    if kind == "parquet":
        return read_parquet_source(path, con)
    if kind == "dma_csv":
        from tasks.sources.dma import read_dma_csv

        return read_dma_csv(path, con)
    if kind == "nmea":
        from tasks.sources.nmea import read_nmea

        return read_nmea(path, con)
    raise InputError(f"source.kind {kind} has no file reader")


@dataclass(frozen=True)
class SourcePart:
    """One source file read into the raw contract on its own (a parquet part), for the fan-out of
    ingest over files: parts are read side by side, then loaded in file order."""

    source: Path
    part_path: Path | None  # None: read straight into the run's database
    rows_in: int
    loaded: int
    quarantine: list[dict] = field(default_factory=list)


def read_source_part(kind: str, path: Path, out_path: Path) -> SourcePart:
    """Read one nmea / dma_csv / parquet file into raw rows (source_row from 1) as a parquet part."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as con:
        create_raw_table(con)
        result = _read(kind, Path(path), con)
        pending = out_path.with_name(out_path.name + ".tmp")
        con.execute("copy (select * from raw_ais order by source_row) to $p (format parquet)", {"p": str(pending)})
    pending.replace(out_path)
    return SourcePart(Path(path), out_path, result.rows_in, result.loaded, list(result.quarantine))


def type_rows(con: duckdb.DuckDBPyConnection) -> int:
    """raw_ais -> typed_ais (sql/stg_typed.sql), one row per raw row; typed_ais's rowid + 1 is
    source_row. With a memory limit (tasks.sqlfiles.connect, the pipeline's way) DuckDB loads in
    parallel without keeping insertion order, about 15 % cheaper: source_row is then a unique id
    of the row within this ingest, not its position in the file (the raw payload and source_file
    say where a rejected row came from). Returns the row count."""
    return create_table_from_sql(con, "typed_ais", "stg_typed")


def ingest_files(
    kind: str, files: list[Path], db_path: Path, work_dir: Path | None = None, memory_limit: str | None = None,
    parts: list[SourcePart] | None = None,
) -> IngestResult:
    """Read every file into table typed_ais (sql/stg_typed.sql: typed values, row rules, raw text
    of failing rows). The raw contract stays queryable as raw_ais: a view over the files for NOAA
    CSV (read in place, in parallel, never copied), a table for the other sources. What cannot be
    read at all goes to table ingest_rejects (quarantine format), which staging adds to the run's
    quarantine. parts: the files already read one by one (read_source_part, the flow's fan-out)."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(work_dir or db_path.parent / "work")
    files = [Path(f) for f in files]
    rejects: list[dict] = []
    per_file: dict[str, dict[str, int]] = {}
    with connect(db_path, memory_limit) as con:
        if kind == "noaa_csv":
            by_csv = noaa_csv_view(files, con, work_dir)
            cr_rejects: list[dict] = []
            try:
                try:
                    type_rows(con)
                except duckdb.Error as exc:
                    if not bare_carriage_return(exc):
                        raise
                    # a stray carriage return stopped the whole scan: quarantine its lines, read the rest
                    replaced, cr_rejects = without_bare_carriage_returns(files, work_dir)
                    by_csv = noaa_csv_view(files, con, work_dir, read_instead=replaced)
                    type_rows(con)
            except duckdb.Error as exc:
                first = str(exc).splitlines()[0]
                raise InputError(f"AIS files {', '.join(map(str, files))} cannot be read as CSV ({first}); "
                                 "check they are MarineCadastre CSVs") from None
            rejects = cr_rejects + malformed_rows(con, by_csv)
            loaded_by_file = dict(con.execute("select source_file, count(*) from typed_ais group by 1").fetchall())
            bad_by_file = Counter(json.loads(r["payload"])["source_file"] for r in rejects)
            for path in files:
                bad, loaded = bad_by_file[str(path)], loaded_by_file.get(str(path), 0)
                per_file[str(path)] = {"rows_in": loaded + bad, "loaded": loaded, "quarantined": bad}
        else:
            create_raw_table(con)
            if parts is None:  # read here, one file after another
                parts = []
                for path in files:
                    result = _read(kind, path, con)
                    parts.append(SourcePart(path, None, result.rows_in, result.loaded, list(result.quarantine)))
            else:  # read already (read_source_part, side by side): append in file order, source_row continuing
                for part in parts:
                    con.execute("insert into raw_ais select * replace (source_row + (select coalesce(max(source_row), 0) "
                                "from raw_ais) as source_row) from read_parquet($p)", {"p": str(part.part_path)})
            for part in parts:
                rejects.extend(part.quarantine)
                per_file[str(part.source)] = {"rows_in": part.rows_in, "loaded": part.loaded, "quarantined": len(part.quarantine)}
            type_rows(con)
        frame = pd.DataFrame(rejects, columns=list(QUARANTINE_COLUMNS)).astype("string")
        con.register("_rejects", frame)
        con.execute("create or replace table ingest_rejects as select * from _rejects")
        con.unregister("_rejects")
        loaded = con.execute("select count(*) from typed_ais").fetchall()[0][0]
    return IngestResult(db_path, files, loaded + len(rejects), len(rejects), per_file)


def ingest_noaa_csv(source_path: Path, db_path: Path) -> IngestResult:
    """One MarineCadastre CSV (plain, .gz or .zip)."""
    return ingest_files("noaa_csv", [Path(source_path)], db_path)
