"""The raw contract every AIS source writes: NOAA MarineCadastre's 17 column names, text values
in NOAA's formats, plus the fields other feeds carry that NOAA files do not.

Value formats (what sql/stg_ais_positions.sql parses):
- MMSI: digits. BaseDateTime: UTC, `YYYY-MM-DDTHH:MM:SS` (or with a space).
- LAT/LON: decimal degrees. SOG: knots. COG/Heading: degrees true. Not-available codes are kept
  as sent (SOG 102.3, COG 360, Heading 511, LAT 91, LON 181, ROT -128): staging turns them to NULL.
- VesselType: the AIS ship-type number (0-99). Status: the AIS navigational status number (0-15).
- Length/Width/Draft: metres. IMO: `IMO` + 7 digits. TransceiverClass: `A` or `B`.
- ROT: rate of turn in degrees per minute as sent (-128 = not available). Destination: text.
Missing values are NULL (not empty strings).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from tasks.errors import InputError

NOAA_COLUMNS = (
    "MMSI", "BaseDateTime", "LAT", "LON", "SOG", "COG", "Heading", "VesselName", "IMO", "CallSign",
    "VesselType", "Status", "Length", "Width", "Draft", "Cargo", "TransceiverClass",
)
EXTRA_COLUMNS = ("ROT", "Destination")
RAW_COLUMNS = NOAA_COLUMNS + EXTRA_COLUMNS


def check_source_file(path: Path, what: str = "AIS file") -> Path:
    """The checks every file source starts with, as one-line errors that say what to do."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; check source.path in the pipeline config")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; point source.path at a file, or at a folder of files of that kind")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty; re-download it or point source.path at another file")
    return path


def open_binary(path: Path) -> io.BufferedIOBase:
    """A byte reader for .csv or .csv.gz."""
    return gzip.open(path, "rb") if Path(path).name.endswith(".gz") else open(path, "rb")


def open_text(path: Path) -> io.TextIOBase:
    """A text reader for .csv or .csv.gz; undecodable bytes become U+FFFD instead of failing."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline="")


@dataclass
class SourceResult:
    """What one adapter call did: rows appended to the raw table, and what it could not read."""

    path: Path
    rows_in: int                  # records or lines the file held that were meant as data
    loaded: int                   # rows appended to the raw table
    # quarantine rows: dicts with stage="ingest", reason, record_id, mmsi, payload (JSON text);
    # build them with tasks.artifacts.quarantine_row
    quarantine: list[dict[str, Any]] = field(default_factory=list)


def create_raw_table(con: duckdb.DuckDBPyConnection, table: str = "raw_ais") -> None:
    """An empty raw table: source_row (1-based, across all files of this ingest), source_file,
    then the contract's columns as VARCHAR."""
    cols = ", ".join(f'"{c}" varchar' for c in RAW_COLUMNS)
    con.execute(f'create or replace table "{table}" (source_row bigint, source_file varchar, {cols})')


def append_frame(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, source_file: str, table: str = "raw_ais") -> int:
    """Append a DataFrame holding (a subset of) RAW_COLUMNS; absent columns become NULL."""
    unknown = sorted(set(frame.columns) - set(RAW_COLUMNS))
    if unknown:
        raise ValueError(f"columns {unknown} are not in the raw contract {RAW_COLUMNS}")
    start = con.execute(f'select coalesce(max(source_row), 0) from "{table}"').fetchall()[0][0]
    select = ", ".join(
        f'cast("{c}" as varchar) as "{c}"' if c in frame.columns else f'cast(null as varchar) as "{c}"'
        for c in RAW_COLUMNS
    )
    con.register("_raw_frame", frame)
    try:
        con.execute(
            f'insert into "{table}" select {start} + row_number() over () , $file, {select} from _raw_frame',
            {"file": source_file},
        )
    finally:
        con.unregister("_raw_frame")
    return len(frame)
