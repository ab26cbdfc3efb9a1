"""Every registered detector scored against the simulator's ground truth through the real pipeline.

A small simulation (tasks/simulate.py) goes through the real ingest, staging and compute_facts;
each fact query in tasks.facts.FACT_QUERIES whose truth the simulator writes is scored with
tasks.scoring.SCORERS (the facts contract's matching rule) and must reach F1 >= 0.95, the issue's
target. The detectors are discovered, so one registered later is tested without editing this file.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import pytest

from bench.facts import score_detectors, truth_name
from tasks.config import FactsConfig, SimulateConfig
from tasks.facts import FACT_QUERIES, compute_facts, fact_params
from tasks.ingest import ingest_files
from tasks.ports import load_ports
from tasks.simulate import TRUTH_NAMES, simulate
from tasks.sqlfiles import run_sql
from tasks.stage import stage_positions
from tests.conftest import row_hash

TARGET_F1 = 0.95
SIMULATED_TRUTH = {"port_calls", "gaps", *TRUTH_NAMES}  # port calls and gaps have their own result fields
SCORED = [fact for fact in FACT_QUERIES if truth_name(fact) in SIMULATED_TRUTH]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("detector-scores")
    sim = simulate(SimulateConfig(vessels=30, hours=48, seed=11), load_ports(), out / "source")
    ingest_files("noaa_csv", [sim.csv_path], out / "w.duckdb")
    stage_positions(out / "w.duckdb", out / "staged", store_dir=out / "store")
    facts = compute_facts(out / "w.duckdb", None, FactsConfig(), out / "facts")
    scores, unscored, _ = score_detectors(facts.paths, out / "source")
    return scores, unscored


def test_simulated_truths_have_detectors_to_score():
    # the movement, port-call, stay, voyage, gap and traffic detectors are registered from the start
    assert {"vessel_movement", "port_calls", "port_stays", "voyages", "ais_gaps", "traffic_density"} <= set(SCORED)


@pytest.mark.parametrize("detector", SCORED)
def test_detector_f1_against_simulated_truth(scored, detector):
    scores, unscored = scored
    assert detector not in unscored, f"{detector}: no ground_truth_{truth_name(detector)}.csv was written"
    score = scores[detector]
    assert score["tp"] + score["fn"] >= 1, f"{detector}: the truth is empty here, so the score says nothing"
    assert score["f1"] >= TARGET_F1, f"{detector}: {score}"


T0 = datetime(2024, 1, 15, 6, 0, 0)
PORT = ("Test Harbour", "USTST", 33.7000, -118.2000)
NM_PER_DEGREE_LAT = math.radians(1) * 3440.065  # haversine_nm along a meridian


def test_moored_gps_jitter_is_not_distance_run():
    """A step counts when either of its reports is underway: a moored vessel's GPS noise adds nothing,
    the step off the berth and every step under way do."""
    con = duckdb.connect()
    con.execute(
        "create table stg_ais_positions (mmsi bigint, ts timestamp, lat double, lon double, sog_kn double, "
        "cog_deg double, nav_status integer, vessel_name varchar, vessel_type integer, row_hash uuid)"
    )
    con.execute("create table ports (port_name varchar, locode varchar, lat double, lon double)")
    con.execute("insert into ports values (?, ?, ?, ?)", PORT)
    jitter = [0.0, 0.0002, -0.0002, 0.0001, -0.0001, 0.0002]  # ~0.01 nm of GPS noise each way
    rows = [(T0 + timedelta(minutes=3 * i), 33.705 + j, -118.201 - j, 0.1, 5) for i, j in enumerate(jitter)]  # moored 06:00-06:15
    # 06:18 and 06:21 under way due north at 0.05 degree (3.002 nm) per step
    rows += [(T0 + timedelta(minutes=18 + 3 * i), 33.755 + 0.05 * i, -118.201, 12.0, 0) for i in range(2)]
    con.executemany(
        "insert into stg_ais_positions values (366000009, ?, ?, ?, ?, 0.0, ?, 'SHIP', 70, ?)",
        [(*r, row_hash(f"h{i}")) for i, r in enumerate(rows)],
    )
    out = run_sql(con, "vessel_movement", fact_params("vessel_movement", FactsConfig())).df()
    assert len(out) == 1
    row = out.iloc[0]
    # the step off the berth (33.7052 -> 33.755) and one step under way; no jitter
    assert row.distance_nm == pytest.approx((33.755 - 33.7052 + 0.05) * NM_PER_DEGREE_LAT, abs=0.002)
    assert row.minutes_moored == pytest.approx(18.0) and row.minutes_underway == pytest.approx(3.0)
