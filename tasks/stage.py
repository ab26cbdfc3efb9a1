"""Clean/stage: typed_ais (written by ingest) -> stg_ais_positions (kept) + quarantined rows with
reasons, and the kept rows stored as day-partitioned parquet (hive style: positions/date=YYYY-MM-DD/)."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from tasks.artifacts import replace_dir
from tasks.config import StageConfig
from tasks.sqlfiles import connect, create_table_from_sql, sql_text

# the staged schema, with units; written as column comments into the run's DuckDB file
STAGED_COLUMNS = {
    "source_row": "id of the row within this ingest, across its files (provenance; read order only when loaded single-threaded)",
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
    "row_hash": "md5 of the raw row's fields as a UUID; its text without dashes is the md5 hex (provenance; identical rows share it)",
}


@dataclass(frozen=True)
class StageResult:
    positions_path: Path
    quarantine_path: Path
    kept: int
    rejected: dict[str, int] = field(default_factory=dict)
    days: list[str] = field(default_factory=list)
    store_dir: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 3)
        self._last = now


def write_day_partitions(con: duckdb.DuckDBPyConnection, store_dir: Path) -> tuple[list[str], list[str]]:
    """Store the staged rows as store_dir/positions/date=D/data.parquet. A day the store holds
    already is merged: a row already stored (same row_hash) is replaced, not added, so
    re-ingesting a day is idempotent and rows of that day from other files stay. Days not in this
    ingest are not touched; every folder is swapped in whole (tasks.artifacts.replace_dir). Days
    are written side by side, one per DuckDB thread (DuckDB writes one parquet file on one thread).
    Returns (days written, days that already held rows and were merged)."""
    positions = Path(store_dir) / "positions"
    days = [str(d) for (d,) in con.execute("select distinct cast(ts as date) from stg_ais_positions order by 1").fetchall()]
    merged = [d for d in days if (positions / f"date={d}" / "data.parquet").exists()]
    pending = positions.with_name(f".positions.writing.{os.getpid()}")
    if pending.exists():
        shutil.rmtree(pending)
    pending.mkdir(parents=True)

    def write(day: str) -> None:
        folder = pending / f"date={day}"
        folder.mkdir()
        # a range on ts, so DuckDB skips the row groups of other days
        new_rows = (f"select * from stg_ais_positions where ts >= date '{day}' "
                    f"and ts < date '{day}' + interval 1 day")
        params = {"out": str(folder / "data.parquet")}
        if day in merged:
            # a store written before row_hash became a UUID holds it as md5 hex text: the cast reads
            # both (32 hex characters are the same 16 bytes), so old rows still match new ones
            new_rows = (f"select * from ({new_rows}) union all by name "
                        f"select * replace (cast(row_hash as uuid) as row_hash) from read_parquet($old) "
                        f"where cast(row_hash as uuid) not in (select row_hash from ({new_rows}))")
            params["old"] = str(positions / f"date={day}" / "data.parquet")
        with con.cursor() as cur:
            cur.execute(f"copy ({new_rows}) to $out (format parquet)", params)

    threads = int(con.execute("select current_setting('threads')").fetchall()[0][0])
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(days)))) as pool:
        list(pool.map(write, days))
    for day in days:
        replace_dir(pending / f"date={day}", positions / f"date={day}")
    shutil.rmtree(pending)
    return days, merged


def link_days(store_dir: Path, days: list[str], target: Path) -> Path:
    """target/date=D/data.parquet for each day: hard links to the store's files (a snapshot that
    later merges into the store do not change: they swap in new files), copies across file
    systems. Returns target, a hive-partitioned folder pandas and DuckDB read as one table."""
    pending = target.with_name(f".{target.name}.writing.{os.getpid()}")
    if pending.exists():
        shutil.rmtree(pending)
    for day in days:
        source = Path(store_dir) / "positions" / f"date={day}" / "data.parquet"
        link = pending / f"date={day}" / "data.parquet"
        link.parent.mkdir(parents=True)
        try:
            os.link(source, link)
        except OSError:
            shutil.copy2(source, link)
    pending.mkdir(parents=True, exist_ok=True)
    replace_dir(pending, target)
    return target


# rows rejected by the track rules parsed cleanly: the staging table keeps them, typed, for the
# anomaly facts (identity conflicts, jumps)
FLAGGED_REASONS = ("conflicting_position", "impossible_jump")


def apply_track_rules(con: duckdb.DuckDBPyConnection, max_implied_speed_kn: float) -> int:
    """typed_ais -> stg_track_rejects (sql/stg_track_rejects.sql) and stg_ais_positions
    (sql/stg_ais_positions.sql, a view) on an open connection; returns the rows kept."""
    create_table_from_sql(con, "stg_track_rejects", "stg_track_rejects", {"max_implied_speed_kn": max_implied_speed_kn})
    # a view: the kept rows are typed_ais less a few rejects, so they are not written again
    con.execute("drop table if exists stg_ais_positions")
    con.execute(f"create or replace view stg_ais_positions as {sql_text('stg_ais_positions').strip().rstrip(';')}")
    return con.execute("select count(*) from stg_ais_positions").fetchall()[0][0]


def rows_with_reasons(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    """Every typed row with its source_row and reject_reason (NULL = staged), after apply_track_rules."""
    return con.sql(
        """
        select t.*, coalesce(t.invalid_reason, r.reject_reason) as reject_reason
        from (select rowid + 1 as source_row, * from typed_ais) t
        left join stg_track_rejects r using (source_row)
        order by source_row
        """
    )


def stage_positions(db_path: Path, out_dir: Path, cfg: StageConfig | None = None, store_dir: Path | None = None) -> StageResult:
    """Apply the track rules (sql/stg_track_rejects.sql) to the typed rows ingest wrote, keep the
    clean rows as table stg_ais_positions (sql/stg_ais_positions.sql), merge them into the
    day-partitioned store and, when a stored day gained rows, reload the touched days (with what
    they held before) as stg_ais_positions for the fact queries. Quarantine: rows failing a row
    rule keep their raw text as a JSON payload; rows failing a track rule parsed cleanly and keep
    their parsed values and row_hash (md5 of the raw fields). Table stg_flagged_positions keeps
    the conflicting and jumping rows, typed, for the anomaly facts."""
    cfg = cfg or StageConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    positions_path = out_dir / "positions.parquet"
    quarantine_path = out_dir / "quarantine_positions.parquet"
    with connect(db_path, cfg.duckdb_memory_limit) as con:
        clock = _Clock()
        kept = apply_track_rules(con, cfg.max_implied_speed_kn)
        clock.lap("track rules")
        con.execute(
            """
            create or replace table stg_flagged_positions as
            select r.reject_reason, t.* exclude (invalid_reason, raw_payload)
            from stg_track_rejects r
            join (select rowid + 1 as source_row, * from typed_ais) t using (source_row)
            where r.reject_reason in (select unnest($reasons::varchar[]))
            """,
            {"reasons": list(FLAGGED_REASONS)},
        )
        if not con.execute("select count(*) from information_schema.tables where table_name = 'ingest_rejects'").fetchall()[0][0]:
            con.execute("create table ingest_rejects (stage varchar, reason varchar, record_id varchar, mmsi varchar, payload varchar)")
        con.execute(
            """
            create or replace table quarantine_positions as
            select 'stage' as stage, invalid_reason as reason, 'row:' || (rowid + 1) as record_id,
                   trim(raw_payload ->> 'MMSI') as mmsi, raw_payload as payload
            from typed_ais
            where invalid_reason is not null
            union all
            select 'stage', r.reject_reason, 'row:' || r.source_row, cast(t.mmsi as varchar), to_json(t)::varchar
            from stg_track_rejects r
            join (select rowid + 1 as source_row, * exclude (invalid_reason, raw_payload) from typed_ais) t
              using (source_row)
            union all
            select stage, reason, record_id, mmsi, payload from ingest_rejects
            """
        )
        rejected = dict(
            con.execute("select reason, count(*) from quarantine_positions group by reason order by reason").fetchall()
        )
        clock.lap("quarantine")
        days: list[str] = []
        if store_dir is not None:
            days, merged = write_day_partitions(con, store_dir)
            files = [str(Path(store_dir) / "positions" / f"date={d}" / "data.parquet") for d in days]
            if merged:  # a stored day gained or kept rows from earlier ingests: facts need all of them
                con.execute("drop view stg_ais_positions")
                con.execute("create table stg_ais_positions as select * from read_parquet($f, union_by_name = true)",
                            {"f": files})
            clock.lap("day partitions")
        for column, comment in STAGED_COLUMNS.items():
            quoted = comment.replace("'", "''")
            con.execute(f"comment on column stg_ais_positions.{column} is '{quoted}'")
        if store_dir is None:
            con.execute("copy stg_ais_positions to $p (format parquet)", {"p": str(positions_path)})
        else:  # the run's positions are the day files it touched: linked, not written twice
            positions_path = link_days(Path(store_dir), days, out_dir / "positions")
        # row groups bounded in bytes: quarantine rows carry their raw text, and an ordered copy
        # holds a whole row group in memory (the default 122,880 rows overran a 128 MB cap)
        con.execute("copy (select * from quarantine_positions order by stage, record_id) to $p "
                    "(format parquet, row_group_size_bytes '16MB')",
                    {"p": str(quarantine_path)})
        clock.lap("parquet files")
    return StageResult(positions_path, quarantine_path, kept, rejected, days, Path(store_dir) if store_dir else None,
                       clock.seconds)
