"""Detectors scored against the simulator's planted ground truth (port calls)."""

from __future__ import annotations

import pandas as pd

from tasks.config import FactsConfig, SimulateConfig
from tasks.facts import compute_facts
from tasks.ingest import ingest_noaa_csv
from tasks.ports import load_ports
from tasks.simulate import simulate
from tasks.stage import stage_positions


def test_port_calls_match_ground_truth(tmp_path):
    sim = simulate(SimulateConfig(seed=3, vessels=25, hours=36), load_ports(), tmp_path / "source")
    ingest_noaa_csv(sim.csv_path, tmp_path / "w.duckdb")
    stage_positions(tmp_path / "w.duckdb", tmp_path / "staged")
    facts = compute_facts(tmp_path / "w.duckdb", None, FactsConfig(), tmp_path / "facts")
    detected = pd.read_parquet(facts.paths["port_calls"])
    truth = pd.read_csv(sim.port_calls_path, parse_dates=["arrival", "departure"])
    complete = truth[~truth["truncated"]]
    assert len(complete) >= 20
    key = ["mmsi", "locode", "arrival", "departure"]
    found = complete[key].merge(detected[key], on=key, how="left", indicator=True)
    recall = (found["_merge"] == "both").mean()
    # every detected call that is not cut by the data's edges must be a planted one
    inner = detected[~detected.arrival_before_data & ~detected.departure_after_data]
    extra = inner[key].merge(truth[key], on=key, how="left", indicator=True)
    precision = (extra["_merge"] == "both").mean()
    assert recall == 1.0, found[found["_merge"] != "both"]
    assert precision == 1.0, extra[extra["_merge"] != "both"]
