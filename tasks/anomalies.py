"""Reference tables the fact queries join: plausible maximum SOG per AIS ship-type code (and its
name), and the flag state of each MMSI's MID.

tasks/data/mid_flags.csv (mid,flag_country,flag_iso2): ITU Maritime Identification Digits
201-775 (ITU-R M.585, Radio Regulations Appendix 43) and the state or area each is allocated to;
sql/vessel_particulars.sql reads it as table mid_flags.

tasks/data/vessel_type_max_speed.csv (type_from,type_to,type_name,max_sog_kn) lists inclusive
ranges of AIS ship-type codes; sql/speed_anomalies.sql reads it as table vessel_type_max_speed.
Values are generous on purpose (a fast container ship does 25 kn, a fast ferry 40-50, a planing
pleasure boat 50): above them a reported SOG is a transponder or decoding error, not seamanship.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from tasks.errors import InputError

VESSEL_TYPE_MAX_SPEED_CSV = Path(__file__).resolve().parent / "data" / "vessel_type_max_speed.csv"
MID_FLAGS_CSV = Path(__file__).resolve().parent / "data" / "mid_flags.csv"
MAX_SPEED_COLUMNS = ("type_from", "type_to", "type_name", "max_sog_kn")


def read_vessel_type_max_speed(path: Path | str = VESSEL_TYPE_MAX_SPEED_CSV) -> pd.DataFrame:
    """The type -> max SOG table, checked: integer codes 1-99, from <= to, no overlapping ranges,
    a positive maximum. Raises InputError naming the bad row and how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"vessel type speed table {path} is missing; it ships with tidewright in tasks/data/")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MAX_SPEED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path} lacks columns {missing}; expected header {','.join(MAX_SPEED_COLUMNS)}")
    if table.empty:
        raise InputError(f"{path} has no rows; list at least one type range with its max_sog_kn")
    out = pd.DataFrame({"type_name": table["type_name"].str.strip()})
    for column, kind in (("type_from", "Int64"), ("type_to", "Int64"), ("max_sog_kn", "Float64")):
        values = pd.to_numeric(table[column].str.strip(), errors="coerce")
        bad = values.isna()
        if bad.any():
            line = int(bad.idxmax()) + 2  # header is line 1
            raise InputError(f"{path} line {line}: {column} {table[column].iloc[line - 2]!r} is not a number; fix or remove the row")
        out[column] = values.astype(kind)
    for i, row in out.iterrows():
        line = int(i) + 2
        if not (1 <= row.type_from <= row.type_to <= 99):
            raise InputError(f"{path} line {line}: type range {row.type_from}-{row.type_to} must satisfy 1 <= type_from <= type_to <= 99")
        if not row.max_sog_kn > 0:
            raise InputError(f"{path} line {line}: max_sog_kn must be a positive speed in knots")
    ordered = out.sort_values("type_from").reset_index(drop=True)
    overlap = ordered["type_from"].iloc[1:].to_numpy() <= ordered["type_to"].iloc[:-1].to_numpy()
    if overlap.any():
        k = int(overlap.argmax())
        raise InputError(
            f"{path}: type ranges {ordered.type_from[k]}-{ordered.type_to[k]} and "
            f"{ordered.type_from[k + 1]}-{ordered.type_to[k + 1]} overlap; each type code may have one maximum"
        )
    return out[list(MAX_SPEED_COLUMNS)]


def load_reference_tables(con: duckdb.DuckDBPyConnection, max_speed_path: Path | str = VESSEL_TYPE_MAX_SPEED_CSV) -> None:
    """Create (or replace) tables vessel_type_max_speed and mid_flags in the connection's database."""
    table = read_vessel_type_max_speed(max_speed_path)
    con.register("vessel_type_max_speed_df", table)
    try:
        con.execute(
            "create or replace table vessel_type_max_speed as select "
            "cast(type_from as integer) as type_from, cast(type_to as integer) as type_to, "
            "cast(type_name as varchar) as type_name, cast(max_sog_kn as double) as max_sog_kn "
            "from vessel_type_max_speed_df order by type_from"
        )
    finally:
        con.unregister("vessel_type_max_speed_df")
    con.execute(
        "create or replace table mid_flags as select cast(mid as integer) as mid, flag_country, flag_iso2 "
        "from read_csv($p, header = true, columns = {'mid': 'INTEGER', 'flag_country': 'VARCHAR', 'flag_iso2': 'VARCHAR'})",
        {"p": str(MID_FLAGS_CSV)},
    )
