"""The simulator's ground truth read through the real ingest + staging (DuckDB): what detectors see."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

import tasks.simulate as sim
from tasks.config import FactsConfig, SimulateConfig
from tasks.ingest import ingest_noaa_csv
from tasks.ports import load_ports
from tasks.simulate import simulate
from tasks.stage import stage_positions


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    out = tmp_path_factory.mktemp("truth-staged")
    cfg = SimulateConfig(vessels=20, hours=24, seed=5, identity_conflicts_per_day=5, position_spikes_per_day=5, speed_anomalies_per_day=5)
    result = simulate(cfg, load_ports(), out / "source")
    ingest_noaa_csv(result.csv_path, out / "w.duckdb")
    stage_positions(out / "w.duckdb", out / "staged")
    con = duckdb.connect(str(out / "w.duckdb"))
    yield result, con
    con.close()


def _truth(result, name, times=("start", "end")):
    return pd.read_csv(result.truth_paths[name], parse_dates=list(times))


def test_staging_flags_exactly_the_spikes_and_the_twins(staged):
    result, con = staged
    flagged = con.execute("select mmsi, ts, lat, lon, reject_reason from stg_flagged_positions").df()
    assert set(flagged["reject_reason"]) == {"impossible_jump"}
    jumps = _truth(result, "jumps", times=("ts",))
    conflicts = _truth(result, "identity_conflicts")
    assert len(jumps) >= 3 and len(conflicts) >= 3
    spike_keys = set(zip(jumps["mmsi"], jumps["ts"]))
    assert spike_keys <= set(zip(flagged["mmsi"], flagged["ts"]))
    twins = flagged[[key not in spike_keys for key in zip(flagged["mmsi"], flagged["ts"])]]
    for row in twins.itertuples():
        episode = conflicts[(conflicts["mmsi"] == row.mmsi) & (conflicts["start"] <= row.ts) & (conflicts["end"] >= row.ts)]
        assert len(episode) == 1, row
    for episode in conflicts.itertuples():
        mine = twins[(twins["mmsi"] == episode.mmsi)]
        assert mine["ts"].min() == episode.start and mine["ts"].max() == episode.end
        # the vessel's own track stays whole through the episode: no false gap
        own = con.execute(
            "select ts from stg_ais_positions where mmsi = $m and ts between $a - interval 10 minute and $b + interval 10 minute order by ts",
            {"m": int(episode.mmsi), "a": episode.start, "b": episode.end},
        ).df()["ts"]
        assert own.diff().dt.total_seconds().max() <= 400


def test_gaps_in_the_staged_track_are_exactly_the_planted_ones(staged):
    result, con = staged
    found = con.execute(
        """
        select mmsi, prev_ts as gap_start, ts as gap_end from (
            select mmsi, ts, lag(ts) over (partition by mmsi order by ts) as prev_ts from stg_ais_positions
        ) where date_diff('second', prev_ts, ts) > 30 * 60
        """
    ).df()
    truth = pd.read_csv(result.gaps_path, parse_dates=["gap_start", "gap_end"])
    assert len(truth) >= 3
    assert set(found.itertuples(index=False, name=None)) == set(truth[["mmsi", "gap_start", "gap_end"]].itertuples(index=False, name=None))


def test_speed_anomalies_are_what_the_staged_rows_show(staged):
    result, con = staged
    con.execute("create or replace table limits as select * from read_csv($p)", {"p": str(sim.MAX_SPEED_PATH)})
    fast = con.execute(
        """
        select s.mmsi, s.ts, s.sog_kn from stg_ais_positions s
        join limits l on s.vessel_type between l.type_from and l.type_to
        where s.sog_kn > l.max_sog_kn order by s.mmsi, s.ts
        """
    ).df()
    truth = _truth(result, "speed_anomalies")
    assert len(truth) >= 3
    covered = pd.Series(False, index=fast.index)
    for row in truth.itertuples():
        inside = (fast["mmsi"] == row.mmsi) & fast["ts"].between(row.start, row.end)
        assert fast.loc[inside, "sog_kn"].max() == pytest.approx(row.max_sog_kn)
        covered |= inside
    assert covered.all()


def test_traffic_truth_equals_a_count_over_the_staged_rows(staged):
    result, con = staged
    counted = con.execute(
        """
        select date_trunc('hour', ts) as hour, cast(floor(lat / 0.1) as bigint) as cell_lat_idx,
               cast(floor(lon / 0.1) as bigint) as cell_lon_idx, vessel_type as vessel_type_code, count(distinct mmsi) as vessels
        from stg_ais_positions group by all
        """
    ).df()
    truth = _truth(result, "traffic", times=("hour",))
    key = ["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code", "vessels"]
    assert set(counted[key].itertuples(index=False, name=None)) == set(truth[key].itertuples(index=False, name=None))


def test_truth_definitions_use_the_facts_defaults():
    defaults = FactsConfig()
    expected = {
        "port_radius_nm": sim.PORT_RADIUS_NM,
        "window_minutes": sim.MOVEMENT_WINDOW_MINUTES,
        "min_window_positions": sim.MOVEMENT_MIN_POSITIONS,
        # fields FactsConfig gains for issue 4: compared once they exist
        "berth_radius_nm": sim.BERTH_RADIUS_NM,
        "gap_minutes": sim.GAP_THRESHOLD_MINUTES,
        "loiter_max_sog_kn": sim.LOITER_MAX_SOG_KN,
        "loiter_min_minutes": sim.LOITER_MIN_MINUTES,
        "loiter_radius_nm": sim.LOITER_RADIUS_NM,
        "encounter_min_sog_kn": sim.ENCOUNTER_MIN_SOG_KN,
        "encounter_bucket_minutes": sim.ENCOUNTER_BUCKET_MINUTES,
        "encounter_cpa_nm": sim.ENCOUNTER_CPA_NM,
        "encounter_tcpa_minutes": sim.ENCOUNTER_TCPA_MINUTES,
        "traffic_cell_deg": sim.TRAFFIC_CELL_DEG,
        "major_turn_deg": sim.MAJOR_TURN_DEG,
    }
    present = {name: value for name, value in expected.items() if name in type(defaults).model_fields}
    assert {"port_radius_nm", "window_minutes", "min_window_positions"} <= set(present)
    assert {name: getattr(defaults, name) for name in present} == present
