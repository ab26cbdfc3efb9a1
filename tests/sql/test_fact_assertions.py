"""SQL assertions (unique keys, not null, accepted values, row rules) on every fact table, run on
a small simulation, plus proof that the checker catches each kind of violation."""

from __future__ import annotations

import duckdb
import pytest

from tasks.config import FactsConfig, SimulateConfig
from tasks.facts import FACT_QUERIES, FACT_SCHEMAS, check_fact_table, compute_facts
from tasks.ingest import ingest_noaa_csv
from tasks.ports import load_ports
from tasks.simulate import simulate
from tasks.stage import stage_positions


@pytest.fixture(scope="module")
def simulated_facts(tmp_path_factory):
    root = tmp_path_factory.mktemp("facts")
    sim = simulate(SimulateConfig(seed=5, vessels=14, hours=30), load_ports(), root / "source")
    ingest_noaa_csv(sim.csv_path, root / "w.duckdb")
    stage_positions(root / "w.duckdb", root / "staged")
    result = compute_facts(root / "w.duckdb", None, FactsConfig(), root / "facts")
    return root / "w.duckdb", result


def test_every_fact_query_declares_its_schema():
    assert set(FACT_SCHEMAS) == set(FACT_QUERIES)


@pytest.mark.parametrize("name", FACT_QUERIES)
def test_fact_table_meets_its_schema(simulated_facts, name):
    db_path, result = simulated_facts
    assert result.counts[name] > 0, f"{name} is empty: its assertions would prove nothing"
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert check_fact_table(con, name) == []
        columns = {c for (c,) in con.execute(f"select column_name from (describe fact_{name})").fetchall()}
    schema = FACT_SCHEMAS[name]
    assert set(schema.key) | set(schema.not_null) | set(schema.accepted) <= columns


def test_checker_reports_duplicates_nulls_unknown_values_and_broken_rules(simulated_facts):
    db_path, _ = simulated_facts
    with duckdb.connect(str(db_path), read_only=True) as source:
        stays = source.execute("select * from fact_port_stays").df()
    con = duckdb.connect()
    con.register("stays_df", stays)
    con.execute("create table broken as select * from stays_df")
    con.execute("insert into broken select * from broken limit 1")                       # a duplicate key
    con.execute("update broken set kind = 'drifting' where rowid = (select min(rowid) from broken)")
    con.execute("update broken set locode = null where rowid = (select max(rowid) from broken)")
    con.execute("""update broken set "end" = "start" - interval 1 minute where rowid = 1""")
    problems = check_fact_table(con, "port_stays", table="broken")
    assert len(problems) == 4, problems
    assert "1 key(s) (mmsi, start) occur more than once" in problems[0]
    assert "broken.locode: 1 NULL value(s)" in problems[1]
    assert "broken.kind: 1 value(s) outside ['anchorage', 'berth']" in problems[2]
    assert '"end" >= "start"' in problems[3]


def test_berth_radius_must_lie_inside_the_port_radius():
    from tasks.config import load_config
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError, match=r"facts.berth_radius_nm \(3\) must be below facts.port_radius_nm \(3\)"):
        load_config(None, {"facts.berth_radius_nm": 3.0})
    assert load_config(None, {"facts.berth_radius_nm": 2.0}).facts.berth_radius_nm == 2.0
