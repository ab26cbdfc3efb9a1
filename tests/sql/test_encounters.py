"""Close encounters (sql/close_encounters.sql) on hand-built straight tracks in an in-memory DuckDB:
CPA/TCPA, merging of buckets, each COLREG situation, the CPA limit's edge, midnight, +-180,
pairs on either side of a grid-cell border, a CPA predicted after a vessel berths, and a glitched SOG."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import pytest

from tasks.anomalies import load_reference_tables
from tasks.facts import check_fact_table
from tasks.sqlfiles import create_table_from_sql, load_macros, run_sql
from tests.conftest import row_hash

NM_PER_DEG = 3440.065 * math.pi / 180  # nm per degree of latitude on the haversine sphere
PARAMS = {
    "encounter_min_sog_kn": 2.0, "encounter_bucket_minutes": 10, "encounter_cpa_nm": 0.5,
    "encounter_tcpa_minutes": 20.0,
}
MEET = datetime(2024, 1, 15, 6, 30, 0)

def offset(lat: float, lon: float, east_nm: float, north_nm: float) -> tuple[float, float]:
    """A point east_nm / north_nm away on the local flat projection (the one the query uses)."""
    lat2 = lat + north_nm / NM_PER_DEG
    lon2 = lon + east_nm / (NM_PER_DEG * math.cos(math.radians((lat + lat2) / 2)))
    return lat2, (lon2 + 540.0) % 360.0 - 180.0


def track(mmsi, through, at, sog, cog, before_min=40, after_min=20, every_s=60, skew_s=0):
    """Reports every every_s seconds of a vessel on a straight course that passes `through` at time `at`."""
    rows = []
    for k in range(-int(before_min * 60 / every_s), int(after_min * 60 / every_s) + 1):
        seconds = k * every_s + skew_s
        run_nm = sog * seconds / 3600.0
        lat, lon = offset(*through, run_nm * math.sin(math.radians(cog)), run_nm * math.cos(math.radians(cog)))
        rows.append((mmsi, at + timedelta(seconds=seconds), lat, lon, sog, cog))
    return rows


CARGO = 70  # AIS ship type: cargo, plausible up to the maximum in tasks/data/vessel_type_max_speed.csv


def positions_table(rows):
    """An in-memory DuckDB with the reference tables and stg_ais_positions holding `rows`
    (mmsi, ts, lat, lon, sog, cog[, vessel_type]); vessel_type defaults to CARGO."""
    con = duckdb.connect()
    load_macros(con)
    load_reference_tables(con)
    con.execute("create table stg_ais_positions (mmsi bigint, ts timestamp, lat double, lon double, sog_kn double, "
                "cog_deg double, vessel_type integer, row_hash uuid)")
    con.executemany("insert into stg_ais_positions values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*r[:6], r[6] if len(r) > 6 else CARGO, row_hash(f"h{i}")) for i, r in enumerate(rows)])
    return con


def encounters(rows, params=None):
    con = positions_table(rows)
    return con, run_sql(con, "close_encounters", {**PARAMS, **(params or {})}).df()


@pytest.mark.parametrize(
    ("cog_a", "sog_a", "cog_b", "sog_b", "offset_nm", "skew_b_s", "situation"),
    [
        (0.0, 12.0, 180.0, 12.0, 0.2, 0, "head_on"),       # reciprocal courses
        (10.0, 12.0, 185.0, 10.0, 0.1, 30, "head_on"),     # courses 175 deg apart: within 10 of reciprocal
        (0.0, 12.0, 160.0, 12.0, 0.1, 0, "crossing"),      # 160 deg apart: not head-on, not overtaking
        (0.0, 12.0, 270.0, 10.0, 0.0, 20, "crossing"),     # right angles
        (0.0, 6.0, 5.0, 14.0, 0.15, 0, "overtaking"),      # b comes up from astern on nearly the same course
        (90.0, 15.0, 60.0, 8.0, 0.1, 45, "overtaking"),    # a overtakes b: b sees a abaft its beam
    ],
)
def test_colreg_situation_and_cpa(cog_a, sog_a, cog_b, sog_b, offset_nm, skew_b_s, situation):
    meet = (36.5, -122.5)
    rows = track(366000001, meet, MEET, sog_a, cog_a)
    # b passes offset_nm to starboard of a's meeting point (perpendicular to a's course)
    b_point = offset(*meet, offset_nm * math.cos(math.radians(cog_a)), -offset_nm * math.sin(math.radians(cog_a)))
    rows += track(366000002, b_point, MEET, sog_b, cog_b, skew_s=skew_b_s)
    _, out = encounters(rows)
    assert len(out) == 1, out
    row = out.iloc[0]
    assert (row.mmsi_a, row.mmsi_b) == (366000001, 366000002)
    assert row.situation == situation
    # CPA of two straight tracks, by hand: b is offset_nm to starboard of a at MEET
    d = (offset_nm * math.cos(math.radians(cog_a)), -offset_nm * math.sin(math.radians(cog_a)))
    v = tuple(sog_b * f(math.radians(cog_b)) - sog_a * f(math.radians(cog_a)) for f in (math.sin, math.cos))
    t_h = -(d[0] * v[0] + d[1] * v[1]) / (v[0] ** 2 + v[1] ** 2)
    assert row.cpa_nm == pytest.approx(math.hypot(d[0] + v[0] * t_h, d[1] + v[1] * t_h), abs=0.005)
    assert abs((row.cpa_time - MEET).total_seconds() - t_h * 3600) <= 5
    assert 0 <= row.tcpa_minutes <= 20


@pytest.mark.parametrize(("offset_nm", "found"), [(0.48, True), (0.52, False)])
def test_pair_just_inside_or_outside_the_cpa_limit(offset_nm, found):
    meet = (40.0, -70.0)
    rows = track(366000001, meet, MEET, 12.0, 0.0) + track(366000002, offset(*meet, offset_nm, 0.0), MEET, 12.0, 180.0)
    _, out = encounters(rows)
    assert len(out) == (1 if found else 0)
    if found:
        assert out.iloc[0].cpa_nm == pytest.approx(offset_nm, abs=0.005)


def test_one_row_per_approach_however_many_buckets_see_it():
    # slow closing (overtaking by 4 kn) keeps the CPA ahead for three 10-minute buckets
    meet = (29.0, -90.0)
    rows = track(366000001, meet, MEET, 8.0, 45.0, before_min=60) + track(366000002, offset(*meet, 0.1, -0.1), MEET, 12.0, 45.0, before_min=60)
    _, out = encounters(rows)
    assert len(out) == 1
    row = out.iloc[0]
    assert row.n_buckets >= 2 and row.first_bucket < row.last_bucket
    assert row.situation == "overtaking"
    assert abs((row.cpa_time - MEET).total_seconds()) <= 5


def test_approach_across_midnight_is_one_encounter():
    at = datetime(2024, 1, 16, 0, 4, 0)
    meet = (47.5, -124.9)
    rows = track(366000001, meet, at, 14.0, 200.0) + track(366000002, offset(*meet, 0.1, 0.0), at, 11.0, 20.0)
    _, out = encounters(rows)
    assert len(out) == 1
    row = out.iloc[0]
    assert row.first_bucket < datetime(2024, 1, 16) <= row.cpa_time
    assert row.situation == "head_on"
    assert abs((row.cpa_time - at).total_seconds()) <= 5


def test_antimeridian_pair_is_found_with_the_right_geometry():
    # a heads east, b heads west 0.25 nm to the north; they pass 0.02 nm west of the date line.
    # Reports fall 30 s either side of the CPA, so before it a is always at +179.x and b at -179.x
    meet = (52.0, 179.9995)
    rows = track(366000001, meet, MEET, 12.0, 90.0, skew_s=30) + track(366000002, offset(*meet, 0.0, 0.25), MEET, 12.0, 270.0, skew_s=30)
    con, out = encounters(rows)
    before = con.execute("select mmsi, min(lon), max(lon) from stg_ais_positions where ts < $t group by mmsi order by mmsi",
                         {"t": MEET}).fetchall()
    assert before[0][1] > 179.5 and before[1][2] < -179.5
    assert len(out) == 1
    row = out.iloc[0]
    assert row.situation == "head_on"
    assert row.cpa_nm == pytest.approx(0.25, abs=0.01)
    assert 0 < row.range_nm < 20  # measured the short way round, not ~21,000 nm
    assert row.lon_a > 179.5 and row.lon_b < -179.5
    assert abs((row.cpa_time - MEET).total_seconds()) <= 5


def test_vessels_in_neighbouring_grid_cells_are_paired():
    con = duckdb.connect()
    load_macros(con)
    # the grid the query uses: band height = cell / 60 degrees, cell = CPA limit + 40 kn over 30 minutes
    cell_nm = 0.5 + 40.0 * (20 + 10) / 60.0
    band_deg = cell_nm / 60.0
    border_lat = 100 * band_deg  # a band border near 34 N
    n_cells = con.execute("select grid_lon_cells(99, $d, $c)", {"d": band_deg, "c": cell_nm}).fetchall()[0][0]
    border_lon = -180.0 + 360.0 / n_cells * math.floor((-118.0 + 180.0) / (360.0 / n_cells))
    meet = (border_lat + 0.0005, border_lon + 0.0005)
    # crossing courses: at every report a is south-west of both borders, b north-east until just before the CPA
    rows = track(366000001, offset(*meet, -0.05, -0.05), MEET, 10.0, 45.0, before_min=25, after_min=0)
    rows += track(366000002, offset(*meet, 0.05, 0.05), MEET, 10.0, 135.0, before_min=25, after_min=0)
    rows = [r for r in rows if (r[0] == 366000001) == (r[2] < border_lat and r[3] < border_lon)]
    cells = con.execute(
        "select distinct mmsi, floor(lat / $d), grid_lon_cell(lon, grid_lon_cells(cast(floor(lat / $d) as bigint), $d, $c)) "
        "from (select unnest($lat) as lat, unnest($lon) as lon, unnest($m) as mmsi)",
        {"d": band_deg, "c": cell_nm, "lat": [r[2] for r in rows], "lon": [r[3] for r in rows], "m": [r[0] for r in rows]},
    ).fetchall()
    assert len(cells) == 2 and cells[0][1:] != cells[1][1:], cells  # one cell each, different cells
    _, out = encounters(rows)
    assert len(out) == 1
    assert out.iloc[0].situation == "crossing"


@pytest.mark.parametrize(("sog_b", "found"), [(1.5, False), (2.5, True)])
def test_both_vessels_must_be_underway(sog_b, found):
    meet = (25.5, -80.0)
    rows = track(366000001, meet, MEET, 12.0, 0.0) + track(366000002, offset(*meet, 0.1, 0.0), MEET, sog_b, 180.0)
    _, out = encounters(rows)
    assert len(out) == (1 if found else 0)


def test_far_apart_and_diverging_vessels_are_not_encounters():
    meet = (33.0, -118.0)
    rows = track(366000001, meet, MEET, 12.0, 0.0)
    rows += track(366000002, offset(*meet, 3.0, 0.0), MEET, 12.0, 180.0)      # passes 3 nm off
    rows += track(366000003, offset(*meet, 0.2, 0.0), MEET, 12.0, 0.0, before_min=0, after_min=40, skew_s=-10 * 60)
    # 366000003 runs parallel 0.2 nm abeam of 366000001 but only from 06:20 on: station keeping at
    # the same speed is CPA now (TCPA 0) and is an encounter; 366000002 never is
    _, out = encounters(rows)
    pairs = set(zip(out.mmsi_a, out.mmsi_b))
    assert (366000001, 366000002) not in pairs and (366000002, 366000003) not in pairs
    assert (366000001, 366000003) in pairs
    kept = out[(out.mmsi_a == 366000001) & (out.mmsi_b == 366000003)]
    assert len(kept) == 1 and kept.iloc[0].n_buckets >= 2  # one row for the whole run in company


def test_sql_assertions_hold_on_a_busy_scene():
    rows = []
    for i in range(12):  # a fan of vessels converging on one point from all directions
        rows += track(366000100 + i, offset(36.0, -75.0, 0.03 * i, 0.0), MEET, 8.0 + i, 30.0 * i)
    con = positions_table(rows)
    n = create_table_from_sql(con, "fact_close_encounters", "close_encounters", PARAMS)
    assert n >= 30  # most of the 66 pairs meet within 0.5 nm
    assert check_fact_table(con, "close_encounters") == []
    situations = {s for (s,) in con.execute("select distinct situation from fact_close_encounters").fetchall()}
    assert situations == {"head_on", "crossing", "overtaking"}


def test_a_cpa_predicted_after_a_vessel_has_berthed_is_no_encounter():
    # two vessels close head-on toward a CPA at 06:30; b berths (SOG 0) at 06:24, before it
    meet = (32.0, -81.0)
    a = track(366000001, meet, MEET, 10.0, 0.0)
    b = [r for r in track(366000002, offset(*meet, 0.1, 0.0), MEET, 10.0, 180.0) if r[1] < MEET - timedelta(minutes=6)]
    berth = b[-1]
    b += [(366000002, berth[1] + timedelta(minutes=3 * k), berth[2], berth[3], 0.0, 0.0) for k in range(1, 8)]
    _, out = encounters(a + b)
    assert len(out) == 0, out
    # the same approach with b still under way at the CPA (it berths at 06:33) is one
    b_late = [r for r in track(366000002, offset(*meet, 0.1, 0.0), MEET, 10.0, 180.0) if r[1] < MEET + timedelta(minutes=3)]
    berth = b_late[-1]
    b_late += [(366000002, berth[1] + timedelta(minutes=3 * k), berth[2], berth[3], 0.0, 0.0) for k in range(1, 8)]
    _, out = encounters(a + b_late)
    assert len(out) == 1 and out.iloc[0].situation == "head_on"


def test_a_glitched_sog_is_not_dead_reckoned():
    # a heads north at 10 kn; b heads west at 5 kn, 4 nm east and 0.7 nm north of a at 06:30: they pass
    # 3.3 nm apart. b's 06:30 report (its first in the 06:30 bucket) reads 60 kn, which dead-reckoned
    # would put b across a's bow 4 minutes later (CPA 0.03 nm).
    meet = (36.0, -75.0)
    a = track(366000001, meet, MEET, 10.0, 0.0, before_min=10, after_min=10)
    b = track(366000002, offset(*meet, 4.0, 0.7), MEET, 5.0, 270.0, before_min=10, after_min=10)
    glitched = [r[:4] + (60.0 if r[1] == MEET else r[4], r[5]) for r in b]
    # cargo (type 70) tops out at 30 kn: the glitch is skipped, b's 06:31 report speaks for it
    _, out = encounters(a + [r + (CARGO,) for r in glitched])
    assert len(out) == 0, out
    # with no type known, 60 kn cannot be called implausible: it is dead-reckoned and predicts an encounter
    _, out = encounters(a + [r + (None,) for r in glitched])
    assert len(out) == 1 and out.iloc[0].cpa_nm < 0.1
