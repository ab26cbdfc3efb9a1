"""The real NOAA MarineCadastre sample from ../shared/data (used by path, never copied)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.config import FactsConfig
from tasks.facts import compute_facts
from tasks.ingest import ingest_noaa_csv
from tasks.stage import stage_positions
from tests.conftest import NOAA_SAMPLE

pytestmark = pytest.mark.skipif(
    not NOAA_SAMPLE.exists(), reason=f"real NOAA sample not found at {NOAA_SAMPLE} (../shared/data is not beside this checkout)"
)


def test_real_noaa_sample_ingests_stages_and_yields_facts(tmp_path):
    ingested = ingest_noaa_csv(NOAA_SAMPLE, tmp_path / "w.duckdb")
    assert ingested.rows == 99_999
    staged = stage_positions(tmp_path / "w.duckdb", tmp_path / "staged")
    # counts from ../shared/data/ais/SOURCES.md: 1 exact duplicate; 8 MMSIs not 9 digits (99 rows) and
    # 10 nine-digit MMSIs with a MID outside 2xx-7xx
    assert staged.rejected["duplicate_row"] == 1
    assert staged.rejected["invalid_mmsi"] >= 99
    assert staged.kept + sum(staged.rejected.values()) == 99_999
    # SOURCES.md: "duplicate (MMSI, BaseDateTime): 75 extra rows in 43 groups, all with conflicting
    # positions" -- the one exact duplicate sits inside one of those groups
    quarantine = pd.read_parquet(staged.quarantine_path)
    same_time = quarantine[quarantine.reason.isin(["conflicting_position", "duplicate_row"])]
    # these rows parsed cleanly: their payload is the parsed row (staged column names) and its row_hash
    keys = same_time["payload"].map(lambda p: tuple(json.loads(p)[k] for k in ("mmsi", "ts")))
    assert keys.nunique() == 43 and len(keys) - keys.nunique() == 75
    positions = pd.read_parquet(staged.positions_path)
    assert positions["sog_kn"].isna().sum() == 173           # SOG 102.3 -> NULL
    assert positions["heading_deg"].isna().sum() >= 52_000   # heading 511 -> NULL
    assert positions["sog_kn"].max() < 102.3
    assert positions["mmsi"].astype(str).str.fullmatch(r"[2-7]\d{8}").all()
    facts = compute_facts(tmp_path / "w.duckdb", None, FactsConfig(window_minutes=30, min_window_positions=3), tmp_path / "facts")
    assert facts.counts["vessel_movement"] > 1000
    movement = pd.read_parquet(facts.paths["vessel_movement"])
    assert (movement["max_sog_kn"] >= movement["mean_sog_kn"] - 1e-9).all()
