"""Ingest: every source file of a run into the run's DuckDB file as raw text rows (the raw
contract in tasks/sources/raw.py), with unreadable lines and records quarantined."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
from prefect import task

from tasks.artifacts import QUARANTINE_COLUMNS
from tasks.errors import InputError
from tasks.sources.noaa import check_noaa_csv, read_noaa_csv, read_parquet_source
from tasks.sources.raw import NOAA_COLUMNS, SourceResult, check_source_file, create_raw_table
from tasks.sqlfiles import connect

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


def _read(kind: str, path: Path, con: duckdb.DuckDBPyConnection, work_dir: Path) -> SourceResult:
    if kind == "noaa_csv":
        return read_noaa_csv(path, con, work_dir=work_dir)
    if kind == "parquet":
        return read_parquet_source(path, con)
    if kind == "dma_csv":
        from tasks.sources.dma import read_dma_csv

        return read_dma_csv(path, con)
    if kind == "nmea":
        from tasks.sources.nmea import read_nmea

        return read_nmea(path, con)
    raise InputError(f"source.kind {kind} has no file reader")


def ingest_files(
    kind: str, files: list[Path], db_path: Path, work_dir: Path | None = None, memory_limit: str | None = None
) -> IngestResult:
    """Load every file into table raw_ais; what cannot be read goes to table ingest_rejects
    (quarantine format), which staging adds to the run's quarantine."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(work_dir or db_path.parent / "work")
    rejects: list[dict] = []
    per_file: dict[str, dict[str, int]] = {}
    with connect(db_path, memory_limit) as con:
        create_raw_table(con)
        for path in files:
            result = _read(kind, Path(path), con, work_dir)
            rejects.extend(result.quarantine)
            per_file[str(path)] = {"rows_in": result.rows_in, "loaded": result.loaded, "quarantined": len(result.quarantine)}
        frame = pd.DataFrame(rejects, columns=list(QUARANTINE_COLUMNS)).astype("string")
        con.register("_rejects", frame)
        con.execute("create or replace table ingest_rejects as select * from _rejects")
        con.unregister("_rejects")
        loaded = con.execute("select count(*) from raw_ais").fetchall()[0][0]
    return IngestResult(db_path, [Path(f) for f in files], loaded + len(rejects), len(rejects), per_file)


def ingest_noaa_csv(source_path: Path, db_path: Path) -> IngestResult:
    """One MarineCadastre CSV (plain, .gz or .zip)."""
    return ingest_files("noaa_csv", [Path(source_path)], db_path)


ingest_task = task(name="ingest")(ingest_files)
