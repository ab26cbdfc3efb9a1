"""Every DESIGN.md question category has facts to be seeded from, on the default simulation."""

from __future__ import annotations

from tasks.config import FactsConfig, SimulateConfig
from tasks.facts import FACT_QUERIES, FACTS_BY_CATEGORY, compute_facts
from tasks.ingest import ingest_noaa_csv
from tasks.ports import load_ports
from tasks.simulate import simulate
from tasks.stage import stage_positions


def test_each_category_is_seeded_by_registered_non_empty_facts(tmp_path):
    assert set(FACTS_BY_CATEGORY) == {"identity", "movement", "port_activity", "traffic", "anomalies", "safety"}
    named = {f for facts in FACTS_BY_CATEGORY.values() for f in facts}
    assert named <= set(FACT_QUERIES) and set(FACT_QUERIES) - named == set()  # every fact feeds a category
    sim = simulate(SimulateConfig(seed=5, vessels=30, hours=24), load_ports(), tmp_path / "source")
    ingest_noaa_csv(sim.csv_path, tmp_path / "w.duckdb")
    stage_positions(tmp_path / "w.duckdb", tmp_path / "staged")
    counts = compute_facts(tmp_path / "w.duckdb", None, FactsConfig(), tmp_path / "facts").counts
    for category, facts in FACTS_BY_CATEGORY.items():
        assert all(counts[f] > 0 for f in facts), (category, {f: counts[f] for f in facts})
