"""Clean/stage: raw_ais -> stg_ais_positions (kept) + quarantined rows with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from prefect import task

from tasks.sqlfiles import create_table_from_sql

@dataclass(frozen=True)
class StageResult:
    positions_path: Path
    quarantine_path: Path
    kept: int
    rejected: dict[str, int] = field(default_factory=dict)


def stage_positions(db_path: Path, out_dir: Path) -> StageResult:
    """Run sql/stg_ais_positions.sql, keep clean rows in table stg_ais_positions and write both
    halves to parquet. Rejected rows keep their raw text as a JSON payload."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    positions_path = out_dir / "positions.parquet"
    quarantine_path = out_dir / "quarantine_positions.parquet"
    with duckdb.connect(str(db_path)) as con:
        create_table_from_sql(con, "stg_all", "stg_ais_positions")
        con.execute(
            "create or replace table stg_ais_positions as "
            "select * exclude (reject_reason, mmsi_text) from stg_all where reject_reason is null order by mmsi, ts"
        )
        con.execute(
            """
            create or replace table quarantine_positions as
            select 'stage' as stage, s.reject_reason as reason, 'row:' || s.source_row as record_id,
                   s.mmsi_text as mmsi, to_json(r)::varchar as payload
            from stg_all s join raw_ais r using (source_row)
            where s.reject_reason is not null
            union all
            select 'ingest', 'malformed_csv_row', 'line:' || line, split_part(csv_line, ',', 1),
                   to_json(struct_pack(line, error_type, error_message, csv_line))::varchar
            from ingest_rejects
            order by record_id
            """
        )
        con.execute("copy stg_ais_positions to $p (format parquet)", {"p": str(positions_path)})
        con.execute("copy quarantine_positions to $p (format parquet)", {"p": str(quarantine_path)})
        kept = con.execute("select count(*) from stg_ais_positions").fetchone()[0]
        rejected = dict(
            con.execute("select reason, count(*) from quarantine_positions group by reason order by reason").fetchall()
        )
        con.execute("drop table stg_all")
    return StageResult(positions_path, quarantine_path, kept, rejected)


stage_task = task(name="stage-positions")(stage_positions)
