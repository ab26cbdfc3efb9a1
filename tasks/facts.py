"""Facts: run the fact queries in sql/ over the staged positions and write one parquet per query.

Every answer in the dataset is one of these computed values; the teacher only writes words
around it. Each fact table also declares its grain (unique key), its required columns, accepted
values and row rules; `check_fact_table` turns those into SQL assertions (run by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from tasks.config import FactsConfig
from tasks.anomalies import load_reference_tables
from tasks.ports import load_ports
from tasks.sqlfiles import connect, create_table_from_sql, sql_digest

# fact queries in run order: port_stays, voyages and busiest_ports read table fact_port_calls
FACT_QUERIES = (
    "vessel_movement", "port_calls", "port_stays", "voyages", "track_segments", "ais_gaps", "traffic_density",
    "busiest_ports", "identity_conflicts", "anomaly_jumps", "vessel_particulars", "loitering", "speed_anomalies",
    "close_encounters",
)  # anomaly_jumps and vessel_particulars read fact_identity_conflicts


# the DESIGN.md question categories and the facts each is seeded from
FACTS_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "identity": ("vessel_particulars", "identity_conflicts"),
    "movement": ("vessel_movement", "voyages", "track_segments"),
    "port_activity": ("port_calls", "port_stays"),
    "traffic": ("traffic_density", "busiest_ports"),
    "anomalies": ("ais_gaps", "anomaly_jumps", "loitering", "speed_anomalies", "identity_conflicts"),
    "safety": ("close_encounters",),
}


def fact_params(name: str, cfg: FactsConfig) -> dict[str, Any]:
    """The config values a fact query runs with, as bound $parameters."""
    if name == "vessel_movement":
        return {
            "window_minutes": cfg.window_minutes, "min_positions": cfg.min_window_positions,
            "stopped_max_sog_kn": cfg.stopped_max_sog_kn, "port_radius_nm": cfg.port_radius_nm,
            "berth_radius_nm": cfg.berth_radius_nm, "major_turn_deg": cfg.major_turn_deg,
        }
    if name == "port_calls":
        return {
            "port_radius_nm": cfg.port_radius_nm,
            "stopped_max_sog_kn": cfg.stopped_max_sog_kn,
            "min_call_minutes": cfg.min_call_minutes,
        }
    if name == "port_stays":
        return {"stopped_max_sog_kn": cfg.stopped_max_sog_kn, "berth_radius_nm": cfg.berth_radius_nm}
    if name == "voyages":
        return {"gap_minutes": cfg.gap_minutes, "port_radius_nm": cfg.port_radius_nm}
    if name in ("track_segments", "ais_gaps"):
        return {"gap_minutes": cfg.gap_minutes}
    if name == "traffic_density":
        return {"cell_deg": cfg.traffic_cell_deg}
    if name in ("busiest_ports", "anomaly_jumps", "speed_anomalies", "vessel_particulars"):
        return {}
    if name == "identity_conflicts":
        return {"identity_max_speed_kn": cfg.identity_max_speed_kn, "identity_min_separation_nm": cfg.identity_min_separation_nm,
                "identity_gap_minutes": cfg.identity_gap_minutes, "identity_min_reports": cfg.identity_min_reports}
    if name == "loitering":
        return {"port_radius_nm": cfg.port_radius_nm, "loiter_max_sog_kn": cfg.loiter_max_sog_kn,
                "loiter_min_minutes": cfg.loiter_min_minutes, "loiter_radius_nm": cfg.loiter_radius_nm}
    if name == "close_encounters":
        return {"encounter_min_sog_kn": cfg.encounter_min_sog_kn, "encounter_bucket_minutes": cfg.encounter_bucket_minutes,
                "encounter_cpa_nm": cfg.encounter_cpa_nm, "encounter_tcpa_minutes": cfg.encounter_tcpa_minutes}
    raise KeyError(name)


@dataclass(frozen=True)
class FactSchema:
    """What must hold for every row of a fact table (dbt-style column tests)."""

    key: tuple[str, ...]                                   # unique together (NULL counts as a value)
    not_null: tuple[str, ...]
    accepted: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # column -> allowed values (NULL allowed)
    rules: tuple[str, ...] = ()                            # SQL conditions every row meets


FACT_SCHEMAS: dict[str, FactSchema] = {
    "vessel_movement": FactSchema(
        key=("mmsi", "window_start"),
        not_null=("mmsi", "window_start", "window_end", "n_positions", "first_seen", "last_seen", "mean_sog_kn",
                  "max_sog_kn", "distance_nm", "minutes_underway", "minutes_moored", "minutes_anchored",
                  "major_course_changes", "source_hash"),
        rules=("first_seen >= window_start and last_seen < window_end", "max_sog_kn >= mean_sog_kn - 1e-9",
               "distance_nm >= 0", "major_course_changes >= 0",
               "minutes_underway + minutes_moored + minutes_anchored <= date_diff('second', first_seen, last_seen) / 60.0 + 1e-6"),
    ),
    "port_calls": FactSchema(
        key=("mmsi", "arrival"),
        not_null=("mmsi", "locode", "port_name", "arrival", "departure", "dwell_minutes", "n_positions",
                  "arrival_before_data", "departure_after_data", "source_hash"),
        rules=("departure >= arrival", "dwell_minutes >= 0"),
    ),
    "port_stays": FactSchema(
        key=("mmsi", "start"),
        not_null=("mmsi", "locode", "kind", "start", "end", "minutes", "n_positions", "call_arrival", "truncated",
                  "source_hash"),
        accepted={"kind": ("anchorage", "berth")},
        rules=('"end" >= "start"', '"start" >= call_arrival'),
    ),
    "voyages": FactSchema(
        key=("mmsi", "departure"),
        not_null=("mmsi", "departure", "arrival", "duration_minutes", "distance_nm", "n_positions", "n_segments",
                  "truncated", "source_hash"),
        rules=("arrival > departure", "truncated or (from_locode is not null and to_locode is not null)",
               "from_locode is not null or to_locode is not null", "n_segments >= 1"),
    ),
    "track_segments": FactSchema(
        key=("mmsi", "segment_no"),
        not_null=("mmsi", "segment_no", "start", "end", "n_positions", "distance_nm", "start_lat", "start_lon",
                  "end_lat", "end_lon", "starts_with_data", "ends_with_data", "source_hash"),
        rules=('"end" >= "start"', "segment_no = 1 or gap_before_minutes is not null"),
    ),
    "ais_gaps": FactSchema(
        key=("mmsi", "gap_start"),
        not_null=("mmsi", "gap_start", "gap_end", "minutes", "start_lat", "start_lon", "end_lat", "end_lon",
                  "distance_nm", "source_hash"),
        rules=("gap_end > gap_start", "minutes > 0"),
    ),
    "traffic_density": FactSchema(
        key=("hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code"),
        not_null=("hour", "cell_lat_idx", "cell_lon_idx", "vessels", "n_reports", "cell_area_nm2", "density_per_nm2"),
        rules=("vessels >= 1 and vessels <= n_reports", "cell_area_nm2 > 0",
               # the AIS ship-type field is 8 bits; 100-255 are reserved codes that real feeds still carry
               "vessel_type_code is null or vessel_type_code between 1 and 255", "hour = date_trunc('hour', hour)"),
    ),
    "busiest_ports": FactSchema(
        key=("day", "locode"),
        not_null=("day", "locode", "port_name", "vessels", "calls", "vessel_minutes", "rank"),
        rules=("vessels >= 1 and calls >= vessels", "rank >= 1", "vessel_minutes >= 0"),
    ),
    # rules that name a threshold hold for FactsConfig's defaults (the tests run with those)
    "identity_conflicts": FactSchema(
        key=("mmsi", "start"),
        not_null=("mmsi", "start", "end", "lat_a", "lon_a", "lat_b", "lon_b", "n_reports", "n_reports_b",
                  "separation_nm", "minutes"),
        rules=('"end" >= "start"', "n_reports > n_reports_b", "n_reports_b >= 3", "separation_nm >= 10"),
    ),
    "anomaly_jumps": FactSchema(
        key=("mmsi", "ts"),
        not_null=("mmsi", "ts", "lat", "lon", "source_hash"),
        rules=("knots_from_previous is null or knots_from_previous >= 0", "off_track_nm is null or off_track_nm >= 0",
               "prev_ts is null or prev_ts < ts", "next_ts is null or next_ts > ts"),
    ),
    "vessel_particulars": FactSchema(
        key=("mmsi",),
        not_null=("mmsi", "mid", "n_names", "n_imos", "n_call_signs", "identity_conflicts", "n_positions", "first_seen",
                  "last_seen", "source_hash"),
        accepted={"transceiver_class": ("A", "B")},
        rules=("mid between 201 and 775", "mid = mmsi // 1000000", "last_seen >= first_seen", "n_positions >= 1",
               "length_m is null or length_m > 0"),
    ),
    "loitering": FactSchema(
        key=("mmsi", "start"),
        not_null=("mmsi", "start", "end", "center_lat", "center_lon", "max_radius_nm", "n_reports", "minutes",
                  "mean_sog_kn", "source_hash"),
        rules=("minutes >= 60", "max_radius_nm <= 1.0", "mean_sog_kn <= 3.0", "n_reports >= 2"),
    ),
    "speed_anomalies": FactSchema(
        key=("mmsi", "start"),
        not_null=("mmsi", "vessel_type_code", "type_name", "start", "end", "max_sog_kn", "limit_kn", "n_reports",
                  "source_hash"),
        rules=('"end" >= "start"', "max_sog_kn > limit_kn", "n_reports >= 1"),
    ),
    "close_encounters": FactSchema(
        key=("mmsi_a", "mmsi_b", "first_bucket"),
        not_null=("mmsi_a", "mmsi_b", "situation", "cpa_time", "cpa_nm", "tcpa_minutes", "bucket", "first_bucket",
                  "last_bucket", "n_buckets", "detected_at", "range_nm", "bearing_deg", "relative_bearing_deg",
                  "course_difference_deg", "cog_a_deg", "cog_b_deg", "sog_a_kn", "sog_b_kn", "source_hash"),
        accepted={"situation": ("head_on", "crossing", "overtaking")},
        rules=("mmsi_a < mmsi_b", "cpa_nm >= 0 and cpa_nm <= 0.5", "tcpa_minutes between 0 and 20",
               "first_bucket <= bucket and bucket <= last_bucket", "n_buckets >= 1", "sog_a_kn >= 2 and sog_b_kn >= 2",
               "abs(date_diff('millisecond', detected_at, cpa_time) / 60000.0 - tcpa_minutes) < 0.001",
               "course_difference_deg between 0 and 180"),
    ),
}


def check_fact_table(con: duckdb.DuckDBPyConnection, name: str, table: str | None = None) -> list[str]:
    """SQL assertions for one fact table: [] when its schema holds, else one line per violation."""
    schema, table = FACT_SCHEMAS[name], table or f"fact_{name}"
    quoted = lambda columns: ", ".join(f'"{c}"' for c in columns)  # noqa: E731
    problems = []
    duplicates = con.execute(
        f'select count(*) from (select {quoted(schema.key)} from "{table}" group by all having count(*) > 1)'
    ).fetchall()[0][0]
    if duplicates:
        problems.append(f"{table}: {duplicates} key(s) ({', '.join(schema.key)}) occur more than once")
    # every per-row check in one scan: NULLs, values outside the accepted set, broken rules
    checks = [(f'"{c}" is null', f"{table}.{c}: {{n}} NULL value(s)") for c in schema.not_null]
    params: dict[str, list] = {}
    for i, (column, values) in enumerate(schema.accepted.items()):
        params[f"v{i}"] = list(values)
        checks.append((f'"{column}" is not null and not list_contains($v{i}, "{column}")',
                       f"{table}.{column}: {{n}} value(s) outside {list(values)}"))
    checks += [(f"not coalesce(({rule}), false)", f"{table}: {{n}} row(s) break `{rule}`") for rule in schema.rules]
    if checks:
        counts = con.execute(
            "select " + ", ".join(f"count(*) filter (where {cond})" for cond, _ in checks) + f' from "{table}"', params
        ).fetchall()[0]
        problems += [message.replace("{n}", str(n)) for (_, message), n in zip(checks, counts) if n]
    return problems


@dataclass(frozen=True)
class FactsResult:
    paths: dict[str, Path]
    counts: dict[str, int]
    params: dict[str, dict[str, Any]]
    digests: dict[str, str]


def load_port_table(con: duckdb.DuckDBPyConnection, ports: pd.DataFrame) -> None:
    """Table ports (port_name, locode, lat, lon), which the port-aware facts join."""
    con.register("port_table_df", ports[["port_name", "locode", "lat", "lon"]])
    try:
        con.execute("create or replace table ports as select * from port_table_df")
    finally:
        con.unregister("port_table_df")


def _ensure_flagged_table(con: duckdb.DuckDBPyConnection) -> None:
    """Gaps and traffic also read the reports staging flagged (stg_flagged_positions); a database
    staged without that table gets an empty one, so they read the kept reports alone."""
    tables = {t for (t,) in con.execute("select table_name from information_schema.tables").fetchall()}
    if "stg_flagged_positions" not in tables and "stg_ais_positions" in tables:
        con.execute(
            "create table stg_flagged_positions as "
            "select *, cast(null as varchar) as reject_reason from stg_ais_positions limit 0"
        )


def compute_facts(
    db_path: Path, ports_path: Path | None, cfg: FactsConfig, out_dir: Path, memory_limit: str | None = None
) -> FactsResult:
    """Run every query in FACT_QUERIES over the staged positions in db_path; one parquet per fact in
    out_dir. memory_limit: DuckDB's memory cap (e.g. the stage's "2GB"; beyond it DuckDB spills to a
    folder beside the database); None leaves DuckDB's default (80 % of RAM)."""
    ports = load_ports(ports_path)  # checked before the database is opened
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, counts, params, digests = {}, {}, {}, {}
    with connect(db_path, memory_limit) as con:
        # connect() drops insertion order for streaming loads; fact tables keep their queries' order
        con.execute("set preserve_insertion_order = true")
        load_port_table(con, ports)
        _ensure_flagged_table(con)
        load_reference_tables(con)
        for name in FACT_QUERIES:
            params[name] = fact_params(name, cfg)
            counts[name] = create_table_from_sql(con, f"fact_{name}", name, params[name])
            paths[name] = out_dir / f"{name}.parquet"
            con.execute(f"copy fact_{name} to $p (format parquet)", {"p": str(paths[name])})
            digests[name] = sql_digest(name)
    return FactsResult(paths, counts, params, digests)
