"""Small builders for seeds and examples used by several test modules."""

from __future__ import annotations

from tasks.config import TeacherConfig
from tasks.seeds import Seed, unanswerable_from
from tasks.teacher import TemplateTeacher, to_example

CONTEXT = "AIS position reports for vessel MMSI 366000001 (SEA STAR, cargo), 2024-01-15 UTC:\ntime|lat|lon|sog_kn|cog_deg|status\n06:00:00|33.70000|-118.20000|12.0|90.0|underway"


def movement_seed(form: str = "mean_speed", mmsi: int = 366000001, mean: float = 12.34, maxv: float = 13.06,
                  dist: float = 12.27, n: int = 25, hour: int = 6) -> Seed:
    fact = {"n_positions": n, "n_speeds": n, "mean_sog_kn": mean, "max_sog_kn": maxv, "distance_nm": dist}
    counts = [{"name": "n_positions", "value": n, "kind": "count", "required": False},
              {"name": "n_speeds", "value": n, "kind": "count", "required": False},
              {"name": "n_legs", "value": n - 1, "kind": "count", "required": False}]
    values = counts + {
        "max_speed": [{"name": "max_sog_kn", "value": maxv, "kind": "speed_kn", "required": True}],
        "mean_speed": [{"name": "mean_sog_kn", "value": mean, "kind": "speed_kn", "required": True}],
        "distance_run": [{"name": "distance_nm", "value": dist, "kind": "distance_nm", "required": True}],
    }[form]
    start, end = f"2024-01-15T{hour:02d}:00:00", f"2024-01-15T{hour + 1:02d}:00:00"
    return Seed(
        seed_id=f"{form}-{mmsi}-{hour}", category="movement", difficulty="medium", form=form, answerable=True,
        mmsi=mmsi, asked_mmsi=mmsi, vessel_name="SEA STAR", vessel_type="cargo", window_start=start, window_end=end,
        fact_sql="sql/vessel_movement.sql", fact_sql_digest="x", fact_params={"window_minutes": 60}, fact=fact,
        source_hash="abc", context=CONTEXT, n_context_records=n,
        grounding=[{"name": "mmsi", "value": mmsi, "kind": "id", "required": False},
                   {"name": "window_start", "value": start, "kind": "time", "required": False},
                   {"name": "window_end", "value": end, "kind": "time", "required": False}] + values,
    )


def port_seed(form: str = "dwell", mmsi: int = 366000009) -> Seed:
    fact = {"locode": "USLGB", "port_name": "Long Beach", "arrival": "2024-01-15T07:42:10",
            "departure": "2024-01-15T10:03:40", "dwell_minutes": 141.5}
    grounding = [{"name": "mmsi", "value": mmsi, "kind": "id", "required": False},
                 {"name": "locode", "value": "USLGB", "kind": "entity", "required": True},
                 {"name": "other_port", "value": "Los Angeles", "kind": "distractor", "required": False}]
    grounding += {
        "arrival": [{"name": "arrival", "value": fact["arrival"], "kind": "time", "required": True}],
        "departure": [{"name": "departure", "value": fact["departure"], "kind": "time", "required": True}],
        "dwell": [{"name": "dwell_minutes", "value": 141.5, "kind": "minutes", "required": True},
                  {"name": "dwell_hours", "value": 141.5 / 60, "kind": "hours", "required": False},
                  {"name": "arrival", "value": fact["arrival"], "kind": "time", "required": False},
                  {"name": "departure", "value": fact["departure"], "kind": "time", "required": False}],
    }[form]
    return Seed(
        seed_id=f"{form}-{mmsi}", category="port_activity", difficulty="hard", form=form, answerable=True,
        mmsi=mmsi, asked_mmsi=mmsi, vessel_name="OCEAN 7", vessel_type="tanker",
        window_start="2024-01-15T07:32:10", window_end="2024-01-15T10:13:40", fact_sql="sql/port_calls.sql",
        fact_sql_digest="x", fact_params={}, fact=fact, source_hash="def", context=CONTEXT, n_context_records=30,
        grounding=grounding,
    )


def example(seed: Seed, corrupt_share: float = 0.0, answer: str | None = None) -> dict:
    gen = TemplateTeacher(TeacherConfig(corrupt_share=corrupt_share), seed=1).generate(seed)
    ex = to_example(seed, gen, 1)
    if answer is not None:
        ex["messages"][-1]["content"] = ex["answer"] = answer
    return ex


def unanswerable_seed(absent: int = 367123999) -> Seed:
    return unanswerable_from(movement_seed(), absent)


def small_pipeline(root, seed: int = 5, vessels: int = 30, hours: float = 24):
    """A real simulation ingested, staged and turned into facts: (staged, facts)."""
    from tasks.config import FactsConfig, SimulateConfig
    from tasks.facts import compute_facts
    from tasks.ingest import ingest_noaa_csv
    from tasks.ports import load_ports
    from tasks.simulate import simulate
    from tasks.stage import stage_positions

    sim = simulate(SimulateConfig(seed=seed, vessels=vessels, hours=hours), load_ports(), root / "source")
    ingest_noaa_csv(sim.csv_path, root / "w.duckdb")
    staged = stage_positions(root / "w.duckdb", root / "staged")
    return staged, compute_facts(root / "w.duckdb", None, FactsConfig(), root / "facts")


def catalogue_inputs(staged, facts, cfg=None):
    """What the catalogue's builders read, over a small_pipeline's output."""
    import pandas as pd

    from tasks.catalogue.base import POSITION_COLUMNS, CatalogueInputs, Tracks
    from tasks.config import GenerateConfig
    from tasks.ports import load_ports

    positions = pd.read_parquet(staged.positions_path, columns=POSITION_COLUMNS)
    return CatalogueInputs(staged.positions_path, Tracks(positions), load_ports(None), facts.paths, facts.params,
                           facts.digests, cfg or GenerateConfig())
