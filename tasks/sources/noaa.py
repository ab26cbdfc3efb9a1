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
    open_binary,
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


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def noaa_csv_view(files: list[Path], con: duckdb.DuckDBPyConnection, work_dir: Path | None = None,
                  view: str = "raw_ais", read_instead: dict[Path, Path] | None = None) -> dict[str, Path]:
    """Make `view` the raw contract over MarineCadastre CSV files (plain, .gz, .zip): the files are
    read where they lie, never copied into the database. Files with the same header share one
    parallel reader; columns are typed VARCHAR by name in each header's own order. Lines that are
    not a row of the header's width (an unquoted comma in a name, a cut-off line, bytes that are
    not UTF-8) land in the temp tables csv_reject_errors / csv_reject_scans whenever the view is
    scanned (see malformed_rows). Returns {CSV path read: source file} (a .zip reads its extracted CSV).
    read_instead: source file -> the CSV to read in its place (see without_bare_carriage_returns)."""
    groups: dict[tuple[str, ...], list[tuple[Path, Path]]] = {}
    for path in map(Path, files):
        csv_path = path
        if read_instead and path in read_instead:
            csv_path = read_instead[path]
        elif path.suffix == ".zip":
            csv_path = open_zip_csv(path, Path(work_dir or path.parent) / "unzipped")
        header = tuple(check_noaa_csv(csv_path))
        groups.setdefault(header, []).append((path, csv_path))
    selects = []
    for header, members in groups.items():
        # the dialect is fixed, not sniffed: a bad line in the sniffer's sample must not change how
        # every other line is read
        columns = "{" + ", ".join(f"{_literal(name)}: 'VARCHAR'" for name in header) + "}"
        paths = "[" + ", ".join(_literal(csv) for _, csv in members) + "]"
        # a .zip is named as the user gave it, not as its extracted CSV
        renamed = " ".join(f"when {_literal(csv)} then {_literal(src)}" for src, csv in members if src != csv)
        source_file = f"case filename {renamed} else filename end" if renamed else "filename"
        cols = ", ".join(f'"{c}"' if c in header else f'cast(null as varchar) as "{c}"' for c in RAW_COLUMNS)
        selects.append(
            f"select {source_file} as source_file, {cols} "
            f"from read_csv({paths}, header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
            f"columns = {columns}, filename = true, store_rejects = true, "
            f"rejects_table = 'csv_reject_errors', rejects_scan = 'csv_reject_scans')"
        )
    con.execute(f'create or replace view "{view}" as ' + "\nunion all\n".join(selects))
    return {str(csv): src for members in groups.values() for src, csv in members}


def bare_carriage_return(error: duckdb.Error) -> bool:
    """DuckDB's CSV reader stops a whole scan ("state machine reached an invalid state") at a
    carriage return outside quotes that does not end a line; such a file is read again through
    without_bare_carriage_returns."""
    return "invalid state" in str(error)


def without_bare_carriage_returns(files: list[Path], work_dir: Path) -> tuple[dict[Path, Path], list[dict]]:
    """For each file DuckDB refuses on its own (probed one by one) because a line holds a carriage
    return outside quotes that does not end it: a copy in work_dir/cr_free/ with that record left
    empty (same line ending; DuckDB counts and skips empty lines, so the other records keep their
    numbers) and a quarantine row (malformed_csv_row) with the line as read. A carriage return
    inside a quoted field is CSV and stays; one that ends the file becomes the file's line end. Returns ({source:
    copy}, quarantine rows). Only called after DuckDB refused a scan: one streaming pass per refused
    file, memory bounded by a line."""
    replaced: dict[Path, Path] = {}
    rejects: list[dict] = []
    for source in map(Path, files):
        if not _refused(source, work_dir):
            continue
        path = open_zip_csv(source, Path(work_dir) / "unzipped") if source.suffix == ".zip" else source
        target = Path(work_dir) / "cr_free" / f"{len(replaced)}-{source.name}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        record = 1  # DuckDB's line numbers count records (a quoted field may run over lines), header = 1
        in_quotes, newline = False, b"\n"
        with open_binary(path) as fh, open(target, "wb") as out:
            for line in fh:
                ending = b"\r\n" if line.endswith(b"\r\n") else b"\n" if line.endswith(b"\n") else b""
                if ending:
                    newline = ending
                elif line.endswith(b"\r"):  # the last line ended by a carriage return: the file's line end instead
                    line = line[:-1] + newline
                    ending = newline
                body = line[: len(line) - len(ending)]
                bare = False
                for k, piece in enumerate(body.split(b'"')):
                    if k:
                        in_quotes = not in_quotes
                    bare = bare or (not in_quotes and b"\r" in piece)
                if bare and record == 1:
                    raise InputError(f"AIS file {source} cannot be read as CSV: its first line holds a carriage return "
                                     "inside it (mixed or CR-only line endings?); convert it to LF or CRLF line endings")
                if bare:
                    text = body.decode("utf-8", errors="replace")
                    rejects.append(quarantine_row("ingest", "malformed_csv_row", "carriage return inside the line",
                                                  {"id": f"{source.name}:line:{record}", "mmsi": text.split(",", 1)[0],
                                                   "source_file": str(source), "csv_line": text}))
                    line, in_quotes = ending or b"\n", False
                out.write(line)
                if not in_quotes:
                    record += 1
        replaced[source] = target
    return replaced, rejects


def _refused(source: Path, work_dir: Path) -> bool:
    """Whether DuckDB's CSV reader stops on this file alone for a stray carriage return."""
    with duckdb.connect() as con:
        noaa_csv_view([source], con, work_dir, view="probe")
        try:
            con.execute("select count(*) from probe").fetchall()
        except duckdb.Error as exc:
            return bare_carriage_return(exc)
    return False


def malformed_rows(con: duckdb.DuckDBPyConnection, by_csv: dict[str, Path]) -> list[dict]:
    """Quarantine rows (malformed_csv_row, DuckDB's reason and the raw line) for the lines the last
    scan of a noaa_csv_view could not read; by_csv is what noaa_csv_view returned."""
    if not con.execute("select count(*) from duckdb_tables() where table_name = 'csv_reject_errors'").fetchall()[0][0]:
        return []
    rejects = con.execute(
        """
        select s.file_path, e.line, any_value(e.error_type order by e.column_idx), any_value(e.csv_line order by e.column_idx),
               any_value(e.error_message order by e.column_idx)
        from csv_reject_errors e join csv_reject_scans s using (scan_id, file_id)
        group by all order by s.file_path, e.line
        """
    ).fetchall()
    return [
        quarantine_row("ingest", "malformed_csv_row", f"{error_type}: {message}",
                       {"id": f"{Path(by_csv.get(csv, csv)).name}:line:{line}", "mmsi": text.split(",", 1)[0],
                        "source_file": str(by_csv.get(csv, csv)), "csv_line": text})
        for csv, line, error_type, text, message in rejects
    ]


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
