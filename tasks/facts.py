"""Facts: run the fact queries in sql/ over the staged positions and write one parquet per query.

Every answer in the dataset is one of these computed values; the teacher only writes words
around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from prefect import task

from tasks.config import FactsConfig
from tasks.ports import load_ports
from tasks.sqlfiles import create_table_from_sql, sql_digest

# fact query name -> the config values it is run with (as bound $parameters)
FACT_QUERIES = ("vessel_movement", "port_calls")


def fact_params(name: str, cfg: FactsConfig) -> dict[str, Any]:
    if name == "vessel_movement":
        return {"window_minutes": cfg.window_minutes, "min_positions": cfg.min_window_positions}
    if name == "port_calls":
        return {
            "port_radius_nm": cfg.port_radius_nm,
            "stopped_max_sog_kn": cfg.stopped_max_sog_kn,
            "min_call_minutes": cfg.min_call_minutes,
        }
    raise KeyError(name)


@dataclass(frozen=True)
class FactsResult:
    paths: dict[str, Path]
    counts: dict[str, int]
    params: dict[str, dict[str, Any]]
    digests: dict[str, str]


def compute_facts(db_path: Path, ports_path: Path | None, cfg: FactsConfig, out_dir: Path) -> FactsResult:
    ports = load_ports(ports_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, counts, params, digests = {}, {}, {}, {}
    with duckdb.connect(str(db_path)) as con:
        port_table = ports[["port_name", "locode", "lat", "lon"]]
        con.register("port_table_df", port_table)
        con.execute("create or replace table ports as select * from port_table_df")
        con.unregister("port_table_df")
        for name in FACT_QUERIES:
            params[name] = fact_params(name, cfg)
            counts[name] = create_table_from_sql(con, f"fact_{name}", name, params[name])
            paths[name] = out_dir / f"{name}.parquet"
            con.execute(f"copy fact_{name} to $p (format parquet)", {"p": str(paths[name])})
            digests[name] = sql_digest(name)
    return FactsResult(paths, counts, params, digests)


facts_task = task(name="compute-facts")(compute_facts)
