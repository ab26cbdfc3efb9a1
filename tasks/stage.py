"""Clean/stage: raw_ais -> stg_ais_positions (kept) + quarantined rows with reasons, and the
kept rows stored as day-partitioned parquet (hive style: positions/date=YYYY-MM-DD/)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from prefect import task

from tasks.artifacts import replace_dir
from tasks.config import StageConfig
from tasks.sqlfiles import connect, create_table_from_sql

# the staged schema, with units; written as column comments into the run's DuckDB file
STAGED_COLUMNS = {
    "source_row": "row number across this ingest's raw rows (provenance)",
    "source_file": "file the row came from (provenance)",
    "mmsi": "Maritime Mobile Service Identity, 9 digits, MID 201-775",
    "ts": "report time, UTC",
    "lat": "latitude, decimal degrees WGS84",
    "lon": "longitude, decimal degrees WGS84",
    "sog_kn": "speed over ground, knots; NULL = not available (sent as 102.3)",
    "cog_deg": "course over ground, degrees true; NULL = not available (sent as 360)",
    "heading_deg": "true heading, degrees; NULL = not available (sent as 511)",
    "rot_deg_min": "rate of turn, degrees per minute; NULL = not available (sent as -128)",
    "vessel_name": "vessel name as broadcast",
    "imo": "IMO number as IMOnnnnnnn; NULL when absent or IMO0000000",
    "call_sign": "radio call sign",
    "vessel_type": "AIS ship-type code 1-99; NULL = not available (0)",
    "nav_status": "AIS navigational status 0-14; NULL = not defined (15) or not sent",
    "length_m": "length overall, metres; NULL = not available (0)",
    "width_m": "beam, metres; NULL = not available (0)",
    "draft_m": "draught, metres; NULL = not available (0)",
    "cargo": "NOAA cargo code",
    "destination": "destination as broadcast",
    "transceiver_class": "AIS transceiver class, A or B",
    "row_hash": "md5 of the raw row's fields (provenance; identical rows share it)",
}


@dataclass(frozen=True)
class StageResult:
    positions_path: Path
    quarantine_path: Path
    kept: int
    rejected: dict[str, int] = field(default_factory=dict)
    days: list[str] = field(default_factory=list)
    store_dir: Path | None = None


def write_day_partitions(con: duckdb.DuckDBPyConnection, store_dir: Path) -> tuple[list[str], list[str]]:
    """Merge the staged rows into store_dir/positions/date=D/data.parquet, one day at a time.
    A row already stored (same row_hash) is replaced, not added: re-ingesting a day is idempotent,
    and rows of that day from other files stay. Days not in this ingest are not touched.
    Returns (days written, days that already held rows and were merged)."""
    merged = []
    days = [str(d) for (d,) in con.execute("select distinct cast(ts as date) from stg_ais_positions order by 1").fetchall()]
    for day in days:
        target = Path(store_dir) / "positions" / f"date={day}"
        staging = target.with_name(f".{target.name}.writing.{os.getpid()}")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        new_rows = f"select * from stg_ais_positions where cast(ts as date) = date '{day}'"
        existing = target / "data.parquet"
        if existing.exists():
            merged.append(day)
            query = (f"select * from ({new_rows}) union all by name "
                     f"select * from read_parquet($old) where row_hash not in (select row_hash from ({new_rows}))")
            params = {"old": str(existing), "out": str(staging / "data.parquet")}
        else:
            query, params = new_rows, {"out": str(staging / "data.parquet")}
        con.execute(f"copy ({query} order by mmsi, ts) to $out (format parquet)", params)
        replace_dir(staging, target)
    return days, merged


def stage_positions(db_path: Path, out_dir: Path, cfg: StageConfig | None = None, store_dir: Path | None = None) -> StageResult:
    """Run sql/stg_ais_positions.sql, keep clean rows, merge them into the day-partitioned store
    and reload the touched days (with what they held before) as table stg_ais_positions for the
    fact queries. Rejected rows keep their raw text as a JSON payload."""
    cfg = cfg or StageConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    positions_path = out_dir / "positions.parquet"
    quarantine_path = out_dir / "quarantine_positions.parquet"
    with connect(db_path, cfg.duckdb_memory_limit) as con:
        create_table_from_sql(con, "stg_all", "stg_ais_positions", {"max_implied_speed_kn": cfg.max_implied_speed_kn})
        con.execute(
            "create or replace table stg_ais_positions as "
            "select * exclude (reject_reason, mmsi_text) from stg_all where reject_reason is null order by mmsi, ts"
        )
        if not con.execute("select count(*) from information_schema.tables where table_name = 'ingest_rejects'").fetchall()[0][0]:
            con.execute("create table ingest_rejects (stage varchar, reason varchar, record_id varchar, mmsi varchar, payload varchar)")
        con.execute(
            """
            create or replace table quarantine_positions as
            select 'stage' as stage, s.reject_reason as reason, 'row:' || s.source_row as record_id,
                   s.mmsi_text as mmsi, to_json(r)::varchar as payload
            from stg_all s join raw_ais r using (source_row)
            where s.reject_reason is not null
            union all
            select stage, reason, record_id, mmsi, payload from ingest_rejects
            order by record_id
            """
        )
        rejected = dict(
            con.execute("select reason, count(*) from quarantine_positions group by reason order by reason").fetchall()
        )
        kept = con.execute("select count(*) from stg_ais_positions").fetchall()[0][0]
        days: list[str] = []
        if store_dir is not None:
            days, merged = write_day_partitions(con, store_dir)
            files = [str(Path(store_dir) / "positions" / f"date={d}" / "data.parquet") for d in days]
            if merged:  # a stored day gained or kept rows from earlier ingests: facts need all of them
                con.execute("create or replace table stg_ais_positions as select * from read_parquet($f, union_by_name = true) "
                            "order by mmsi, ts", {"f": files})
        for column, comment in STAGED_COLUMNS.items():
            quoted = comment.replace("'", "''")
            con.execute(f"comment on column stg_ais_positions.{column} is '{quoted}'")
        con.execute("copy stg_ais_positions to $p (format parquet)", {"p": str(positions_path)})
        con.execute("copy quarantine_positions to $p (format parquet)", {"p": str(quarantine_path)})
        con.execute("drop table stg_all")
    return StageResult(positions_path, quarantine_path, kept, rejected, days, Path(store_dir) if store_dir else None)


stage_task = task(name="stage-positions")(stage_positions)
