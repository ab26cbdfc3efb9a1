"""Danish Maritime Authority (DMA) `aisdk` CSV exports -> the raw contract (tasks.sources.raw).

A DMA daily file (`aisdk-YYYY-MM-DD.csv`, plain or .gz) has one row per message with 22 columns

    # Timestamp,Type of mobile,MMSI,Latitude,Longitude,Navigational status,ROT,SOG,COG,Heading,IMO,
    Callsign,Name,Ship type,Cargo type,Width,Length,Type of position fixing device,Draught,
    Destination,ETA,Data source type

and newer exports add A,B,C,D (metres from the GPS antenna to bow, stern, port, starboard).
Extracts written by pandas carry an extra unnamed index column in front; it is ignored.
Timestamps are UTC `dd/mm/yyyy HH:MM:SS`. Columns are matched by name (ignoring case, surrounding
spaces and the leading `#`), so their order and any extra columns do not matter; only
`# Timestamp`, `MMSI`, `Latitude` and `Longitude` are required, other absent columns become NULL.

Where DMA and NOAA differ:
- Navigational status and ship type are text in DMA files, AIS numbers in the contract: the tables
  below translate them. Text that no table knows becomes NULL and is counted in
  `DmaSourceResult.unmapped` (the row is kept: position and time are still good).
- `Type of mobile` says what sent the message. Class A / Class B are vessels (TransceiverClass
  A / B); anything else (Base Station, AtoN, SAR airborne, Search and Rescue Transponder, ...) is
  not a vessel position and goes to quarantine with reason `not_a_vessel`. An empty value is kept
  with TransceiverClass NULL.
- `Cargo type` is text (e.g. "Category X") while NOAA's Cargo is a number: it is dropped (NULL).
- Length/Width come from `Length`/`Width`; where those are empty but A,B,C,D are given,
  Length = A + B and Width = C + D.

Reading follows tasks/ingest.py: a fixed dialect (never sniffed), every column VARCHAR, and lines
DuckDB cannot read as a row of the header's width (wrong field count, bytes that are not UTF-8)
land in DuckDB's rejects table and are quarantined as `malformed_csv_row` with the raw line.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from tasks.artifacts import quarantine_row
from tasks.errors import InputError
from tasks.sources.raw import RAW_COLUMNS, SourceResult, check_source_file, create_raw_table, open_text

DMA_COLUMNS = (
    "# Timestamp", "Type of mobile", "MMSI", "Latitude", "Longitude", "Navigational status", "ROT", "SOG",
    "COG", "Heading", "IMO", "Callsign", "Name", "Ship type", "Cargo type", "Width", "Length",
    "Type of position fixing device", "Draught", "Destination", "ETA", "Data source type",
)
DMA_DIMENSION_COLUMNS = ("A", "B", "C", "D")  # newer exports: antenna to bow, stern, port, starboard
REQUIRED_COLUMNS = ("# Timestamp", "MMSI", "Latitude", "Longitude")
DMA_TIMESTAMP_FORMAT = "%d/%m/%Y %H:%M:%S"

# DMA navigational status text -> AIS navigational status number (ITU-R M.1371, message 1-3 field).
# Keys are compared lower-cased and trimmed. A value that is already a number 0..15 passes through.
NAV_STATUS_CODES: dict[str, int] = {
    "Under way using engine": 0,
    "At anchor": 1,
    "Not under command": 2,
    "Restricted maneuverability": 3,
    "Restricted manoeuvrability": 3,
    "Constrained by her draught": 4,
    "Moored": 5,
    "Aground": 6,
    "Engaged in fishing": 7,
    "Under way sailing": 8,
    "Reserved for future amendment [HSC]": 9,
    "Reserved for future amendment [WIG]": 10,
    "Power-driven vessel towing astern": 11,
    "Power-driven vessel pushing ahead or towing alongside": 12,
    "Reserved for future use": 13,
    "AIS-SART": 14,
    "Unknown value": 15,  # 15 = "not defined"; staging turns it into NULL
    "Undefined": 15,
}

# DMA ship type text -> one representative AIS ship-type number (ITU-R M.1371 table 53). DMA
# writes the category, not the digit, so a whole decade maps to its "all ships of this type" code
# (Cargo 70, Tanker 80, Passenger 60, HSC 40, WIG 20, Other 90); the 3x and 5x special craft have
# their own codes. None = DMA knows no type (Undefined, Unknown value, Reserved, Spare): NULL, not
# counted as unmapped. A value that is already a number 0..99 passes through.
SHIP_TYPE_CODES: dict[str, int | None] = {
    "WIG": 20,
    "Fishing": 30,
    "Towing": 31,
    "Towing long/wide": 32,
    "Dredging": 33,
    "Diving": 34,
    "Military": 35,
    "Sailing": 36,
    "Pleasure": 37,
    "HSC": 40,
    "Pilot": 50,
    "SAR": 51,
    "Tug": 52,
    "Port tender": 53,
    "Anti-pollution": 54,
    "Law enforcement": 55,
    "Medical": 58,
    "Not party to conflict": 59,
    "Passenger": 60,
    "Cargo": 70,
    "Tanker": 80,
    "Other": 90,
    "Undefined": None,
    "Unknown value": None,
    "Unknown": None,
    "Reserved": None,
    "Spare": None,
    "Spare 1": None,
    "Spare 2": None,
    "Class B": None,  # seen in DMA's ship type column; a transceiver class, not a ship type
}

# Type of mobile values that are vessel transceivers; every other non-empty value is not a vessel
TRANSCEIVER_CLASSES: dict[str, str] = {"Class A": "A", "Class B": "B"}


@dataclass
class DmaSourceResult(SourceResult):
    # column ("Navigational status", "Ship type", "IMO") -> {text no table knows: rows}; the value
    # became NULL in the raw table but the row was kept
    unmapped: dict[str, dict[str, int]] = field(default_factory=dict)


def _norm(name: str) -> str:
    return name.strip().lstrip("\ufeff").lstrip("#").strip().lower()


_CANONICAL = {_norm(c): c for c in DMA_COLUMNS + DMA_DIMENSION_COLUMNS}


def check_dma_csv(path: Path) -> list[str]:
    """Fail with a one-line, fixable message unless `path` looks like a DMA aisdk CSV; return the
    header as written (first field may be empty: a pandas index column)."""
    path = check_source_file(path, "DMA AIS file")
    expected = ",".join(DMA_COLUMNS)
    try:
        with open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            first_row = next((row for row in reader if row), None)
    except (OSError, EOFError, gzip.BadGzipFile, csv.Error) as exc:
        raise InputError(f"DMA AIS file {path} cannot be read ({exc}); re-download it") from None
    if not header or not any(h.strip() for h in header):
        raise InputError(f"DMA AIS file {path} has no header line; expected the DMA aisdk columns {expected}")
    found = {_norm(h) for h in header}
    missing = [c for c in REQUIRED_COLUMNS if _norm(c) not in found]
    if missing:
        shown = ",".join(h.strip() for h in header[:8]) + (",..." if len(header) > 8 else "")
        raise InputError(
            f"DMA AIS file {path} lacks DMA aisdk columns {','.join(missing)} (found {shown}); "
            f"this source expects the DMA aisdk CSV header {expected}[,A,B,C,D]"
        )
    if first_row is None:
        raise InputError(
            f"DMA AIS file {path} has a header but no data rows; point source.path at a file with positions"
        )
    return [h.strip().lstrip("\ufeff") for h in header]


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = con.execute("select count(*) from duckdb_tables() where table_name = $t", {"t": table}).fetchone()[0]
    return found > 0


def _lookup_params(table: dict[str, Any]) -> tuple[list[str], list[str | None]]:
    return [k.lower() for k in table], [None if v is None else str(v) for v in table.values()]


def read_dma_csv(path: Path, con: duckdb.DuckDBPyConnection, table: str = "raw_ais") -> DmaSourceResult:
    """Append the rows of one DMA aisdk CSV (.csv or .csv.gz) to `table` in the raw contract's
    text formats; create the table if needed. source_row continues after the rows already there.
    Returns rows_in (data lines) = loaded + len(quarantine)."""
    path = Path(path)
    header = check_dma_csv(path)
    # positional aliases c000.. replace the header's names (which hold '#', spaces, or nothing)
    aliases = [f"c{i:03d}" for i in range(len(header))]
    position: dict[str, str] = {}
    for alias, name in zip(aliases, header):
        canonical = _CANONICAL.get(_norm(name))
        if canonical and canonical not in position:
            position[canonical] = alias

    def col(name: str) -> str:
        """The trimmed text of a DMA column, NULL when empty or absent."""
        return f"""nullif(trim("{position[name]}"), '')""" if name in position else "cast(null as varchar)"

    def text_or_null(name: str) -> str:
        return f"case when lower({col(name)}) in ('unknown', 'unknown value') then null else {col(name)} end"

    def sum_of(a: str, b: str) -> str:
        return f"cast(try_cast({col(a)} as double) + try_cast({col(b)} as double) as varchar)"

    status = f"lower({col('Navigational status')})"
    ship_type = f"lower({col('Ship type')})"
    mobile = f"lower({col('Type of mobile')})"
    is_vessel = f"coalesce({mobile} in (select unnest($vessel_keys)), true)"
    imo_match = rf"""regexp_extract({col('IMO')}, '^(?:IMO)?\s*0*(\d{{1,7}})(?:\.0+)?$', 1)"""
    exprs = {
        "MMSI": col("MMSI"),
        # unparseable timestamps stay as sent: staging quarantines them as unparseable_timestamp
        "BaseDateTime": f"""coalesce(strftime(try_strptime({col('# Timestamp')}, $ts_format), '%Y-%m-%dT%H:%M:%S'),
                                     {col('# Timestamp')})""",
        "LAT": col("Latitude"),
        "LON": col("Longitude"),
        "SOG": col("SOG"),
        "COG": col("COG"),
        "Heading": col("Heading"),
        "VesselName": text_or_null("Name"),
        "IMO": f"case when {imo_match} <> '' then 'IMO' || lpad({imo_match}, 7, '0') end",
        "CallSign": text_or_null("Callsign"),
        "VesselType": f"""case when try_cast({ship_type} as integer) between 0 and 99
                                   then cast(try_cast({ship_type} as integer) as varchar)
                              else map($type_keys, $type_codes)[{ship_type}] end""",
        "Status": f"""case when try_cast({status} as integer) between 0 and 15
                               then cast(try_cast({status} as integer) as varchar)
                          else map($status_keys, $status_codes)[{status}] end""",
        "Length": f"coalesce({col('Length')}, {sum_of('A', 'B')})",
        "Width": f"coalesce({col('Width')}, {sum_of('C', 'D')})",
        "Draft": col("Draught"),
        "Cargo": "cast(null as varchar)",  # DMA's Cargo type is text, NOAA's Cargo a number: dropped
        "TransceiverClass": f"map($vessel_keys, $vessel_codes)[{mobile}]",
        "ROT": col("ROT"),
        "Destination": text_or_null("Destination"),
    }
    status_keys, status_codes = _lookup_params(NAV_STATUS_CODES)
    type_keys, type_codes = _lookup_params(SHIP_TYPE_CODES)
    vessel_keys, vessel_codes = _lookup_params(TRANSCEIVER_CLASSES)
    lookups = {
        "status_keys": status_keys, "status_codes": status_codes,
        "type_keys": type_keys, "type_codes": type_codes,
        "vessel_keys": vessel_keys, "vessel_codes": vessel_codes,
    }
    columns = "{" + ", ".join(f"'{a}': 'VARCHAR'" for a in aliases) + "}"
    try:
        con.execute("drop table if exists _dma_reject_errors; drop table if exists _dma_reject_scans")
        # fixed dialect, not sniffed: a bad line must not change how the other lines are read
        con.execute(
            f"""
            create or replace temp table _dma_read as
            select * from read_csv($path, header = true, auto_detect = false, delim = ',', quote = '"',
                                   escape = '"', columns = {columns}, store_rejects = true,
                                   rejects_table = '_dma_reject_errors', rejects_scan = '_dma_reject_scans')
            """,
            {"path": str(path)},
        )
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise InputError(
            f"DMA AIS file {path} cannot be read as CSV ({first}); check the file is a DMA aisdk CSV"
        ) from None
    try:
        if not _table_exists(con, table):
            create_raw_table(con, table)
        start = con.execute(f'select coalesce(max(source_row), 0) from "{table}"').fetchone()[0]
        target = ", ".join(f'"{c}"' for c in RAW_COLUMNS)
        select = ", ".join(f'{exprs[c]} as "{c}"' for c in RAW_COLUMNS)
        con.execute(
            f"""
            insert into "{table}" (source_row, source_file, {target})
            select $start + row_number() over (order by rowid), $file, {select}
            from _dma_read where {is_vessel}
            """,
            {"start": start, "file": str(path), "ts_format": DMA_TIMESTAMP_FORMAT, **lookups},
        )
        read, loaded = con.execute(
            f"select count(*), count(*) filter (where {is_vessel}) from _dma_read", {"vessel_keys": vessel_keys}
        ).fetchone()

        quarantine: list[dict[str, Any]] = []
        names = [h or "_index" for h in header]
        not_vessels = con.execute(
            f"""
            select record, * exclude (record) from (
                select row_number() over (order by rowid) as record, * from _dma_read
            ) where not {is_vessel} order by record
            """,
            {"vessel_keys": vessel_keys},
        ).fetchall()
        mmsi_at = aliases.index(position["MMSI"])
        for record, *values in not_vessels:
            quarantine.append(quarantine_row(
                "ingest", "not_a_vessel", f"Type of mobile is {values[aliases.index(position['Type of mobile'])]!r}",
                {"id": f"{path.name}:record:{record}", "mmsi": values[mmsi_at], "source_file": str(path),
                 "row": dict(zip(names, values))},
            ))

        rejects = con.execute(
            """
            select line, any_value(error_type order by column_idx) as error_type,
                   any_value(csv_line order by column_idx) as csv_line,
                   any_value(error_message order by column_idx) as error_message
            from _dma_reject_errors group by line order by line
            """
        ).fetchall()
        for line, error_type, csv_line, error_message in rejects:
            fields = next(csv.reader([csv_line or ""]), [])
            mmsi = fields[mmsi_at].strip() if mmsi_at < len(fields) else ""
            quarantine.append(quarantine_row(
                "ingest", "malformed_csv_row", f"{error_type}: {error_message}",
                {"id": f"{path.name}:line:{line}", "mmsi": mmsi, "source_file": str(path), "line": line,
                 "error_type": error_type, "csv_line": csv_line},
            ))

        # text no lookup table knows (a number passes through, so it is not counted)
        unmapped: dict[str, dict[str, int]] = {}
        for column, value, rows in con.execute(
            f"""
            with vessels as (select * from _dma_read where {is_vessel}),
            looked_up as (
                select 'Navigational status' as column_name, {col('Navigational status')} as value,
                       list_contains($status_keys, {status})
                       or coalesce(try_cast({status} as integer) between 0 and 15, false) as known
                from vessels
                union all
                select 'Ship type', {col('Ship type')},
                       list_contains($type_keys, {ship_type})
                       or coalesce(try_cast({ship_type} as integer) between 0 and 99, false)
                from vessels
                union all
                select 'IMO', {col('IMO')}, lower({col('IMO')}) in ('unknown', 'unknown value') or {imo_match} <> ''
                from vessels
            )
            select column_name, value, count(*) from looked_up where value is not null and not known
            group by all order by all
            """,
            {"status_keys": status_keys, "type_keys": type_keys, "vessel_keys": vessel_keys},
        ).fetchall():
            unmapped.setdefault(column, {})[value] = rows
    finally:
        con.execute(
            "drop table if exists _dma_read; drop table if exists _dma_reject_errors; "
            "drop table if exists _dma_reject_scans"
        )
    return DmaSourceResult(path=path, rows_in=read + len(rejects), loaded=loaded, quarantine=quarantine,
                           unmapped=unmapped)
