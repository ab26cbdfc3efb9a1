"""NOAA MarineCadastre CSV (plain, .gz, or .zip as NOAA publishes the daily files) and parquet
exports with the same columns."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import duckdb

from tasks.artifacts import quarantine_row
from tasks.errors import InputError
from tasks.sources.noaa_download import open_zip_csv
from tasks.sources.raw import (
    NOAA_COLUMNS,
    RAW_COLUMNS,
    SourceResult,
    check_source_file,
    create_raw_table,
    open_text,
)


def check_noaa_csv(path: Path) -> list[str]:
    """Fail with a one-line, fixable message unless `path` looks like a MarineCadastre CSV."""
    path = check_source_file(path)
    if path.suffix == ".zip":
        return list(NOAA_COLUMNS)  # checked after extraction, see read_noaa_csv
    try:
        with open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            first_row = next(reader, None)
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


def read_noaa_csv(path: Path, con: duckdb.DuckDBPyConnection, table: str = "raw_ais", work_dir: Path | None = None) -> SourceResult:
    """Append a MarineCadastre CSV to the raw table. Lines that are not a row of the header's
    width (an unquoted comma in a name, a cut-off line, bytes that are not UTF-8) are quarantined
    as malformed_csv_row with DuckDB's reason and the raw line."""
    path = Path(path)
    csv_path = path
    if path.suffix == ".zip":
        csv_path = open_zip_csv(path, Path(work_dir or path.parent) / "unzipped")
    header = check_noaa_csv(csv_path)
    # the dialect is fixed, not sniffed: a bad line in the sniffer's sample must not change how
    # every other line is read; columns are typed by name in the header's own order
    columns = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in header) + "}"
    if not con.execute("select count(*) from information_schema.tables where table_name = $t", {"t": table}).fetchall()[0][0]:
        create_raw_table(con, table)
    start = con.execute(f'select coalesce(max(source_row), 0) from "{table}"').fetchall()[0][0]
    select = ", ".join(f'"{c}"' if c in header else f'cast(null as varchar) as "{c}"' for c in RAW_COLUMNS)
    try:
        con.execute(
            f"""
            insert into "{table}"
            select {start} + row_number() over (), $file, {select}
            from read_csv($path, header = true, auto_detect = false, delim = ',', quote = '"', escape = '"',
                          columns = {columns}, store_rejects = true,
                          rejects_table = 'csv_reject_errors', rejects_scan = 'csv_reject_scans')
            """,
            {"path": str(csv_path), "file": str(path)},
        )
        rejects = con.execute(
            """
            select line, any_value(error_type order by column_idx), any_value(csv_line order by column_idx),
                   any_value(error_message order by column_idx)
            from csv_reject_errors group by line order by line
            """
        ).fetchall()
        loaded = con.execute(f'select count(*) from "{table}" where source_row > $s', {"s": start}).fetchall()[0][0]
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"AIS file {path} cannot be read as CSV ({first}); check it is a MarineCadastre CSV") from None
    quarantine = [
        quarantine_row("ingest", "malformed_csv_row", f"{error_type}: {message}",
                       {"id": f"{path.name}:line:{line}", "mmsi": text.split(",", 1)[0], "csv_line": text})
        for line, error_type, text, message in rejects
    ]
    return SourceResult(path=path, rows_in=loaded + len(quarantine), loaded=loaded, quarantine=quarantine)


def read_parquet_source(path: Path, con: duckdb.DuckDBPyConnection, table: str = "raw_ais") -> SourceResult:
    """A parquet file with NOAA's column names (any types: values are read as text)."""
    path = Path(path)
    try:
        names = [r[0] for r in con.execute("select name from parquet_schema($p)", {"p": str(path)}).fetchall()]
    except duckdb.Error as exc:
        raise InputError(f"{path} is not a readable parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("MMSI", "BaseDateTime", "LAT", "LON") if c not in names]
    if missing:
        raise InputError(f"parquet file {path} lacks columns {','.join(missing)}; it needs NOAA MarineCadastre column names")
    if not con.execute("select count(*) from information_schema.tables where table_name = $t", {"t": table}).fetchall()[0][0]:
        create_raw_table(con, table)
    start = con.execute(f'select coalesce(max(source_row), 0) from "{table}"').fetchall()[0][0]
    select = ", ".join(
        f'cast("{c}" as varchar)' if c in names else f'cast(null as varchar) as "{c}"' for c in RAW_COLUMNS
    )
    con.execute(
        f'insert into "{table}" select {start} + row_number() over (), $file, {select} from read_parquet($p)',
        {"p": str(path), "file": str(path)},
    )
    loaded = con.execute(f'select count(*) from "{table}" where source_row > $s', {"s": start}).fetchall()[0][0]
    return SourceResult(path=path, rows_in=loaded, loaded=loaded)
