"""Ingest: a NOAA MarineCadastre CSV (plain or .gz) into the run's DuckDB file as raw text rows."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import duckdb
from prefect import task

from tasks.errors import InputError

NOAA_COLUMNS = (
    "MMSI", "BaseDateTime", "LAT", "LON", "SOG", "COG", "Heading", "VesselName", "IMO", "CallSign",
    "VesselType", "Status", "Length", "Width", "Draft", "Cargo", "TransceiverClass",
)


@dataclass(frozen=True)
class IngestResult:
    db_path: Path
    source_path: Path
    rows: int           # data lines read: loaded + malformed
    malformed: int      # lines that are not a CSV row of the header's width (quarantined)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def check_noaa_csv(path: Path) -> list[str]:
    """Fail with a one-line, fixable message unless `path` looks like a MarineCadastre CSV."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"AIS file {path} does not exist; check source.path in the pipeline config")
    if path.is_dir():
        raise InputError(f"AIS source {path} is a folder; point source.path at one .csv or .csv.gz file")
    if path.stat().st_size == 0:
        raise InputError(f"AIS file {path} is empty; re-download it or point source.path at another day")
    try:
        with _open_text(path) as fh:
            header = next(csv.reader(fh), None)
            first_row = next(csv.reader(fh), None)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"AIS file {path} cannot be read ({exc}); re-download it") from None
    if not header:
        raise InputError(f"AIS file {path} has no header line; expected the NOAA columns {','.join(NOAA_COLUMNS)}")
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in NOAA_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"AIS file {path} lacks NOAA MarineCadastre columns {','.join(missing)} "
            f"(found {','.join(header[:8])}{',...' if len(header) > 8 else ''}); "
            "this source expects MarineCadastre CSV with the 17-column header"
        )
    if first_row is None:
        raise InputError(f"AIS file {path} has a header but no data rows; point source.path at a file with positions")
    return header


def ingest_noaa_csv(source_path: Path, db_path: Path) -> IngestResult:
    """Load every row as text into table raw_ais (typing happens in sql/stg_ais_positions.sql,
    so a malformed value sends its row to quarantine instead of failing the load). Lines that are
    not a row of the header's width (an unquoted comma in a name, a cut-off line, bytes that are
    not UTF-8) land in table ingest_rejects with DuckDB's reason."""
    source_path = Path(source_path)
    header = check_noaa_csv(source_path)
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # the dialect is fixed, not sniffed: a bad line in the sniffer's sample must not change how
    # every other line is read; columns are typed by name in the header's own order
    columns = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in header) + "}"
    try:
        with duckdb.connect(str(db_path)) as con:
            con.execute(
                f"""
                create or replace table raw_ais as
                select row_number() over () as source_row, *
                from read_csv($path, header = true, auto_detect = false, delim = ',', quote = '"',
                              escape = '"', columns = {columns}, store_rejects = true,
                              rejects_table = 'csv_reject_errors', rejects_scan = 'csv_reject_scans')
                """,
                {"path": str(source_path)},
            )
            con.execute(
                """
                create or replace table ingest_rejects as
                select line, any_value(error_type order by column_idx) as error_type,
                       any_value(csv_line order by column_idx) as csv_line,
                       any_value(error_message order by column_idx) as error_message
                from csv_reject_errors group by line order by line
                """
            )
            loaded = con.execute("select count(*) from raw_ais").fetchone()[0]
            malformed = con.execute("select count(*) from ingest_rejects").fetchone()[0]
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"AIS file {source_path} cannot be read as CSV ({first}); check the file is a MarineCadastre CSV") from None
    return IngestResult(db_path=db_path, source_path=source_path, rows=loaded + malformed, malformed=malformed)


ingest_task = task(name="ingest-noaa-csv")(ingest_noaa_csv)
