"""Anomaly facts on hand-built tracks in an in-memory DuckDB: identity conflicts, impossible jumps,
loitering, speeds implausible for the vessel type; plus the type -> max speed table loader."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import pytest

from tasks.anomalies import VESSEL_TYPE_MAX_SPEED_CSV, load_reference_tables, read_vessel_type_max_speed
from tasks.errors import InputError
from tasks.facts import check_fact_table
from tasks.geo import distance_nm
from tasks.sqlfiles import create_table_from_sql, load_macros, run_sql
from tests.conftest import row_hash

NM_PER_DEG = 3440.065 * math.pi / 180
T0 = datetime(2024, 1, 15, 0, 0, 0)
PORT = ("Test Harbour", "USTST", 33.7000, -118.2000)
IDENTITY = {"identity_max_speed_kn": 60.0, "identity_min_separation_nm": 10.0, "identity_gap_minutes": 30.0,
            "identity_min_reports": 3}
LOITER = {"port_radius_nm": 3.0, "loiter_max_sog_kn": 3.0, "loiter_min_minutes": 60.0, "loiter_radius_nm": 1.0}

def offset(lat, lon, east_nm, north_nm):
    lat2 = lat + north_nm / NM_PER_DEG
    lon2 = lon + east_nm / (NM_PER_DEG * math.cos(math.radians((lat + lat2) / 2)))
    return lat2, (lon2 + 540.0) % 360.0 - 180.0


def steady(mmsi, start, lat, lon, sog, cog, minutes, every_s=120, skew_s=0, vessel_type=70):
    """Reports of a vessel on a straight course: (mmsi, ts, lat, lon, sog, cog, vessel_type)."""
    rows = []
    for k in range(int(minutes * 60 // every_s) + 1):
        seconds = k * every_s + skew_s
        run_nm = sog * seconds / 3600.0
        la, lo = offset(lat, lon, run_nm * math.sin(math.radians(cog)), run_nm * math.cos(math.radians(cog)))
        rows.append((mmsi, start + timedelta(seconds=seconds), la, lo, sog, cog, vessel_type))
    return rows


def database(kept, flagged=(), ports=(PORT,)):
    """stg_ais_positions / stg_flagged_positions / ports as staging and facts.py leave them.
    flagged rows carry a 8th field, the reject reason."""
    con = duckdb.connect()
    load_macros(con)
    columns = ("mmsi bigint, ts timestamp, lat double, lon double, sog_kn double, cog_deg double, "
               "vessel_type integer, row_hash uuid")
    con.execute(f"create table stg_ais_positions ({columns})")
    con.execute(f"create table stg_flagged_positions ({columns}, reject_reason varchar)")
    con.executemany("insert into stg_ais_positions values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*r, row_hash(f"k{i}")) for i, r in enumerate(kept)])
    if flagged:
        con.executemany("insert into stg_flagged_positions values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(*r[:7], row_hash(f"f{i}"), r[7]) for i, r in enumerate(flagged)])
    con.execute("create table ports (port_name varchar, locode varchar, lat double, lon double)")
    con.executemany("insert into ports values (?, ?, ?, ?)", list(ports))
    load_reference_tables(con)
    return con


# --- identity conflicts and impossible jumps -------------------------------------------------

def _twin_scene():
    """Vessel 366000001 steams north 06:00-09:00 (a report every 2 min); 07:00:30-07:40:30 a twin
    30 nm east broadcasts the same MMSI every 2 min, interleaved. Staging set aside most of both
    (impossible jumps); a lone spike at 08:31 is a plain position error."""
    own = steady(366000001, T0 + timedelta(hours=6), 40.0, -70.0, 12.0, 0.0, 180)
    twin_start = T0 + timedelta(hours=7, seconds=30)
    twin_at = offset(*[r for r in own if r[1] == T0 + timedelta(hours=7)][0][2:4], 30.0, 0.0)
    twin = steady(366000001, twin_start, *twin_at, 10.0, 180.0, 40)
    inside = lambda r: twin_start <= r[1] <= twin[-1][1]  # noqa: E731  (staging flags both sides of each switch)
    spike_ts = T0 + timedelta(hours=8, minutes=31)
    spike = (366000001, spike_ts, 40.0, -69.0, 12.0, 0.0, 70, "impossible_jump")
    kept = [r for r in own if not inside(r)]
    flagged = [(*r, "impossible_jump") for r in own if inside(r)] + [(*r, "impossible_jump") for r in twin] + [spike]
    other = steady(366000002, T0 + timedelta(hours=6), 41.0, -71.0, 9.0, 90.0, 180)  # a normal vessel
    return kept + other, flagged, twin, spike


def test_identity_conflict_interleaved_with_normal_reports():
    kept, flagged, twin, _ = _twin_scene()
    out = run_sql(database(kept, flagged), "identity_conflicts", IDENTITY).df()
    assert len(out) == 1
    row = out.iloc[0]
    assert row.mmsi == 366000001
    assert row.start == twin[0][1] and row["end"] == twin[-1][1]  # first and last report of the twin
    assert row.n_reports_b == len(twin)
    assert (row.lat_b, row.lon_b) == pytest.approx(twin[0][2:4])
    assert row.lon_b > row.lon_a and row.separation_nm == pytest.approx(30.0, abs=0.3)
    assert row.n_reports == len(twin) + 20  # the own transmitter's 20 reports in between


def test_identity_conflict_with_the_twin_only_in_kept_rows_is_found_too():
    # the detector does not depend on what staging flagged: same scene, nothing set aside
    kept, flagged, twin, _ = _twin_scene()
    out = run_sql(database(kept + [r[:7] for r in flagged]), "identity_conflicts", IDENTITY).df()
    assert len(out) == 1 and out.iloc[0].start == twin[0][1]


def test_position_spikes_are_jumps_not_identity_conflicts():
    own = steady(366000003, T0, 30.0, -80.0, 10.0, 90.0, 240)
    spikes = [r for r in own if r[1] in (T0 + timedelta(minutes=60), T0 + timedelta(minutes=100))]
    flagged = [(r[0], r[1], r[2] + 0.6, r[3], *r[4:], "impossible_jump") for r in spikes]  # 36 nm north
    kept = [r for r in own if r not in spikes]
    con = database(kept, flagged)
    assert run_sql(con, "identity_conflicts", IDENTITY).df().empty
    create_table_from_sql(con, "fact_identity_conflicts", "identity_conflicts", IDENTITY)
    jumps = run_sql(con, "anomaly_jumps").df()
    assert list(jumps.ts) == [s[1] for s in spikes]
    first = jumps.iloc[0]
    # 36 nm in 2 minutes each way; the track between the neighbours passes right under the spike
    assert first.knots_from_previous == pytest.approx(0.6 * NM_PER_DEG * 30, rel=0.01)
    assert first.knots_to_next == pytest.approx(0.6 * NM_PER_DEG * 30, rel=0.01)
    assert first.off_track_nm == pytest.approx(0.6 * NM_PER_DEG, abs=0.1)
    assert first.prev_ts == T0 + timedelta(minutes=58) and first.next_ts == T0 + timedelta(minutes=62)


def test_jumps_inside_an_identity_conflict_are_reported_as_the_conflict():
    kept, flagged, _, spike = _twin_scene()
    con = database(kept, flagged)
    create_table_from_sql(con, "fact_identity_conflicts", "identity_conflicts", IDENTITY)
    jumps = run_sql(con, "anomaly_jumps").df()
    assert list(jumps.ts) == [spike[1]]  # the 40 twin rows and the own rows between them are not jumps


def test_jump_facts_across_the_antimeridian():
    own = steady(412000001, T0, -17.0, 179.9, 12.0, 90.0, 60)  # Fiji, crossing 180 eastbound
    assert min(r[3] for r in own) < -179.9
    spike_row = own[15]
    flagged = [(*spike_row[:2], spike_row[2] + 0.8, *spike_row[3:], "impossible_jump")]
    con = database([r for r in own if r is not spike_row], flagged)
    create_table_from_sql(con, "fact_identity_conflicts", "identity_conflicts", IDENTITY)
    jump = run_sql(con, "anomaly_jumps").df().iloc[0]
    assert jump.off_track_nm == pytest.approx(0.8 * NM_PER_DEG, abs=0.1)  # not ~21,000 nm the long way


# --- loitering ---------------------------------------------------------------------------------

def drift(mmsi, start, lat, lon, minutes, every_s=180, sog=0.8, radius_nm=0.3):
    """A vessel circling slowly on a small circle around (lat, lon)."""
    rows = []
    for k in range(int(minutes * 60 // every_s) + 1):
        angle = 2 * math.pi * k / 12
        la, lo = offset(lat, lon, radius_nm * math.sin(angle), radius_nm * math.cos(angle))
        rows.append((mmsi, start + timedelta(seconds=k * every_s), la, lo, sog, 0.0, 30))
    return rows


def _approach_and_leave(mmsi, start, lat, lon, loiter_minutes, **kw):
    before = [(mmsi, start - timedelta(minutes=m), lat - 0.02 * m, lon, 10.0, 0.0, 30) for m in (9, 6, 3)]
    loiter = drift(mmsi, start, lat, lon, loiter_minutes, **kw)
    end = loiter[-1][1]
    after = [(mmsi, end + timedelta(minutes=m), lat + 0.02 * m, lon, 10.0, 0.0, 30) for m in (3, 6, 9)]
    return before + loiter + after, loiter


@pytest.mark.parametrize(("minutes", "found"), [(60, True), (57, False)])
def test_loiter_of_exactly_the_minimum_duration(minutes, found):
    rows, loiter = _approach_and_leave(366000010, T0 + timedelta(hours=3), 34.5, -120.5, minutes, every_s=180 if minutes == 60 else 171)
    out = run_sql(database(rows), "loitering", LOITER).df()
    assert len(out) == (1 if found else 0)
    if found:
        row = out.iloc[0]
        assert row.start == loiter[0][1] and row["end"] == loiter[-1][1] and row.minutes == 60.0
        assert row.n_reports == len(loiter)
        center = (sum(r[2] for r in loiter) / len(loiter), sum(r[3] for r in loiter) / len(loiter))
        assert (row.center_lat, row.center_lon) == pytest.approx(center, abs=1e-9)
        farthest = max(distance_nm(*center, r[2], r[3]) for r in loiter)
        assert row.max_radius_nm == pytest.approx(farthest, abs=1e-6) and 0.25 < farthest < 0.4


def test_loiter_across_midnight_and_on_the_antimeridian():
    rows, loiter = _approach_and_leave(412000010, datetime(2024, 1, 15, 23, 30), -16.5, 179.999, 90)
    assert min(r[3] for r in loiter) < 0 < max(r[3] for r in loiter)
    out = run_sql(database(rows), "loitering", LOITER).df()
    assert len(out) == 1
    row = out.iloc[0]
    assert row.start.day == 15 and row["end"].day == 16
    assert abs(row.center_lon) == pytest.approx(179.999, abs=0.002)  # not ~0, the naive mean of +-180
    assert row.max_radius_nm < 0.35


def test_not_loitering_near_ports_too_wide_too_fast_or_unknown_speed():
    near_port, _ = _approach_and_leave(366000011, T0 + timedelta(hours=3), 33.72, -118.21, 120)   # 1.3 nm from the port
    wide, _ = _approach_and_leave(366000012, T0 + timedelta(hours=3), 34.0, -121.0, 120, radius_nm=1.2)
    fast, _ = _approach_and_leave(366000013, T0 + timedelta(hours=3), 34.2, -121.0, 120, sog=3.5)
    # a SOG-not-available report every 50 minutes cuts the run into pieces under an hour
    unknown, _ = _approach_and_leave(366000014, T0 + timedelta(hours=3), 34.4, -121.0, 120)
    unknown = [(*r[:4], None if i % 17 == 0 else r[4], *r[5:]) for i, r in enumerate(unknown)]
    assert run_sql(database(near_port + wide + fast + unknown), "loitering", LOITER).df().empty
    # and the same slow circle far from the port, with speeds known, is loitering
    far, _ = _approach_and_leave(366000015, T0 + timedelta(hours=3), 34.6, -121.0, 120)
    assert len(run_sql(database(far), "loitering", LOITER).df()) == 1


# --- speeds implausible for the type -------------------------------------------------------------

def test_speed_anomaly_episodes_by_type():
    cargo = steady(366000020, T0, 30.0, -75.0, 15.0, 0.0, 120, vessel_type=70)
    # a glitch: reports 30-33 claim 45 kn (cargo limit 30); the SOG-not-available one inside does not split it
    cargo = [(*r[:4], (None if i == 32 else 45.0) if 30 <= i <= 33 else r[4], *r[5:]) for i, r in enumerate(cargo)]
    cargo[50] = (*cargo[50][:4], 31.0, *cargo[50][5:])  # a second, one-report episode
    tug = steady(366000021, T0, 31.0, -75.0, 25.0, 0.0, 20, vessel_type=52)  # tug limit 20: whole track
    ferry = steady(366000022, T0, 32.0, -75.0, 35.0, 0.0, 20, vessel_type=60)  # passenger limit 40: fine
    unlisted = steady(366000023, T0, 33.0, -75.0, 70.0, 0.0, 20, vessel_type=15)  # reserved code: no limit
    out = run_sql(database(cargo + tug + ferry + unlisted), "speed_anomalies").df()
    assert list(zip(out.mmsi, out.n_reports)) == [(366000020, 3), (366000020, 1), (366000021, 11)]
    glitch = out.iloc[0]
    assert glitch.start == cargo[30][1] and glitch["end"] == cargo[33][1]
    assert glitch.max_sog_kn == 45.0 and glitch.limit_kn == 30.0 and glitch.type_name == "cargo"
    assert glitch.vessel_type_code == 70
    assert out.iloc[2].type_name == "tug" and out.iloc[2].limit_kn == 20.0


# --- SQL assertions over one scene with every anomaly ----------------------------------------------

def test_sql_assertions_hold_for_every_anomaly_fact():
    kept, flagged, _, _ = _twin_scene()
    loiter_rows, _ = _approach_and_leave(366000010, T0 + timedelta(hours=3), 34.5, -120.5, 90)
    fast = steady(366000021, T0, 31.0, -75.0, 25.0, 0.0, 20, vessel_type=52)
    con = database(kept + loiter_rows + fast, flagged)
    params = {"identity_conflicts": IDENTITY, "anomaly_jumps": {}, "loitering": LOITER, "speed_anomalies": {}}
    for name, p in params.items():  # identity_conflicts first: anomaly_jumps reads its table
        assert create_table_from_sql(con, f"fact_{name}", name, p) >= 1, name
        assert check_fact_table(con, name) == [], name


# --- the type -> max speed table --------------------------------------------------------------------

def test_reference_table_covers_the_type_codes_in_use():
    table = read_vessel_type_max_speed()
    codes = {c for lo, hi in zip(table.type_from, table.type_to) for c in range(lo, hi + 1)}
    assert {30, 31, 37, 52, 60, 70, 80, 90}.issubset(codes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type_from,type_to,type_name\n70,79,cargo\n", "lacks columns ['max_sog_kn']"),
        ("type_from,type_to,type_name,max_sog_kn\n70,79,cargo,fast\n", "line 2: max_sog_kn 'fast' is not a number"),
        ("type_from,type_to,type_name,max_sog_kn\n70,79,cargo,30\n75,80,tanker,25\n", "overlap"),
        ("type_from,type_to,type_name,max_sog_kn\n79,70,cargo,30\n", "1 <= type_from <= type_to <= 99"),
        ("type_from,type_to,type_name,max_sog_kn\n", "has no rows"),
    ],
)
def test_bad_reference_table_is_a_one_line_input_error(tmp_path, text, message):
    path = tmp_path / "speeds.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_vessel_type_max_speed(path)
    assert VESSEL_TYPE_MAX_SPEED_CSV.is_file()
