"""Port calls and vessels in port on the real NOAA sample with the NGA World Port Index.

The sample is the first 99,999 rows of MarineCadastre's AIS_2022_01_03.csv: 00:00-00:25 UTC for
almost every vessel, plus a few hundred out-of-order rows stamped later that day (SOURCES.md).
With 25 minutes of data, calls are asked to last 15 minutes (facts.min_call_minutes) instead of 30.

How the cases below were verified by hand: `zcat <sample> | grep '^<MMSI>,'` lists each vessel's
raw rows (quoted in the comments); the World Port Index points are Los Angeles (WPI 16080,
UN/LOCODE `US LAX`) 33.75 N 118.25 W and Long Beach (WPI 16070, `US LGB`) 33.766667 N 118.183333 W;
distances from the rows to those points were measured with a separate haversine (R = 3440.065 nm)
and, for the places, checked against the chart of San Pedro Bay (the West Basin container
terminals, the Long Beach anchorages inside the breakwater). January 2022 is the height of the
San Pedro Bay congestion: many container ships sat at the terminals or at anchor all day.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.config import FactsConfig
from tasks.facts import compute_facts
from tasks.ingest import ingest_noaa_csv
from tasks.stage import stage_positions
from tests.conftest import NOAA_SAMPLE, SHARED_DATA

WPI = SHARED_DATA / "ports" / "nga_wpi_pub150_UpdatedPub150.csv.gz"

pytestmark = pytest.mark.skipif(
    not (NOAA_SAMPLE.exists() and WPI.exists()),
    reason=f"real NOAA sample / World Port Index not found under {SHARED_DATA} (../shared/data is not beside this checkout)",
)


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    root = tmp_path_factory.mktemp("noaa_ports")
    ingest_noaa_csv(NOAA_SAMPLE, root / "w.duckdb")
    stage_positions(root / "w.duckdb", root / "staged")
    result = compute_facts(root / "w.duckdb", WPI, FactsConfig(min_call_minutes=15), root / "facts")
    return {name: pd.read_parquet(path) for name, path in result.paths.items()}


def _one(frame: pd.DataFrame, mmsi: int) -> pd.Series:
    rows = frame[frame["mmsi"] == mmsi]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_container_ship_moored_at_the_los_angeles_terminals(facts):
    # EXPRESS BERLIN (241311000): 9 rows 00:00:00 ... 00:22:55, all SOG 0.0, Status 5 (moored), at
    # 33.76395-33.76401 N, 118.27213-118.27215 W: the West Basin terminals, 1.39 nm from the WPI Los
    # Angeles point (Long Beach is 4.44 nm away). Its first row opens the sample, its last is at 00:22:55.
    call = _one(facts["port_calls"], 241311000)
    assert (call.locode, call.port_name) == ("USLAX", "Los Angeles")
    assert str(call.arrival) == "2022-01-03 00:00:00" and str(call.departure) == "2022-01-03 00:22:55"
    assert call.dwell_minutes == pytest.approx(22 + 55 / 60) and call.n_positions == 9
    assert call.arrival_before_data and call.departure_after_data
    # status 5 makes it a berth stay though the terminal lies beyond the 1 nm berth radius of the port point
    stay = _one(facts["port_stays"], 241311000)
    assert (stay.kind, stay.n_positions, bool(stay.truncated)) == ("berth", 9, True)


def test_tanker_waiting_at_the_long_beach_anchorage(facts):
    # CAP FELIX (205517000, type 80 tanker): 7 rows 00:01:33 ... 00:19:33, SOG 0.0-0.1, Status 1 (at
    # anchor), at 33.7294 N 118.1541 W: the Long Beach anchorage inside the breakwater, 2.67 nm from
    # the WPI Long Beach point and 4.95 nm from Los Angeles.
    call = _one(facts["port_calls"], 205517000)
    assert call.locode == "USLGB" and call.n_anchored == 7
    assert str(call.arrival) == "2022-01-03 00:01:33" and call.dwell_minutes == pytest.approx(18.0)
    stay = _one(facts["port_stays"], 205517000)
    assert stay.kind == "anchorage" and stay.mean_distance_nm == pytest.approx(2.67, abs=0.01)


def test_nearest_port_wins_where_two_port_radii_overlap(facts):
    # MAERSK ALGOL (565819000): rows 00:01:57, 00:04:58, 00:07:58, 00:10:58 and one straggler stamped
    # 23:59:58, all SOG 0.0, Status 5, at 33.7537 N 118.2347 W: 0.80 nm from Los Angeles and 2.68 nm
    # from Long Beach, both inside the 3 nm port radius. The call belongs to the nearer port, and the
    # late row (same spot) stretches it over the day.
    call = _one(facts["port_calls"], 565819000)
    assert call.locode == "USLAX" and call.n_positions == 5
    assert str(call.arrival) == "2022-01-03 00:01:57" and str(call.departure) == "2022-01-03 23:59:58"
    assert _one(facts["port_stays"], 565819000).kind == "berth"


def test_vessel_moving_in_the_harbour_makes_no_call(facts):
    # HARBOR KING (367689990, type 60 passenger): 6 rows in the Los Angeles main channel, 1.2 nm from the
    # port point, SOG 6.4-7.3 kn, Status 0 (under way): moving all the time, never stopped.
    assert 367689990 not in set(facts["port_calls"]["mmsi"])
    assert 367689990 not in set(facts["port_stays"]["mmsi"])


def test_vessels_in_port_per_day(facts):
    busiest = facts["busiest_ports"].set_index(["day", "locode"])
    calls = facts["port_calls"]
    # the three moored or anchored vessels above are counted at their ports on 2022-01-03
    for mmsi, locode in ((241311000, "USLAX"), (205517000, "USLGB"), (565819000, "USLAX")):
        assert ((calls.mmsi == mmsi) & (calls.locode == locode)).any()
    los_angeles = busiest.loc[(pd.Timestamp("2022-01-03").date(), "USLAX")]
    long_beach = busiest.loc[(pd.Timestamp("2022-01-03").date(), "USLGB")]
    assert los_angeles.vessels == calls[calls.locode == "USLAX"].mmsi.nunique() >= 3
    assert long_beach.vessels == calls[calls.locode == "USLGB"].mmsi.nunique() >= 1
    # every ranked port holds a vessel; rank 1 holds the most
    day = facts["busiest_ports"][facts["busiest_ports"]["day"].astype(str) == "2022-01-03"]
    assert day.loc[day["rank"] == 1, "vessels"].min() == day["vessels"].max()
