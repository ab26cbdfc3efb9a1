"""SQL assertions for the fact queries on an in-memory DuckDB with hand-built positions."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import duckdb
import pytest

from tasks.sqlfiles import run_sql
from tests.conftest import row_hash

T0 = datetime(2024, 1, 15, 6, 0, 0)
PORT = ("Test Harbour", "USTST", 33.7000, -118.2000)


def _positions(con, rows):
    con.execute(
        "create table stg_ais_positions (mmsi bigint, ts timestamp, lat double, lon double, sog_kn double, "
        "nav_status integer, vessel_name varchar, vessel_type integer, row_hash uuid, cog_deg double)"
    )
    con.executemany("insert into stg_ais_positions values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*r, "SHIP", 70, row_hash(f"h{i}"), None) for i, r in enumerate(rows)])
    con.execute("create table ports (port_name varchar, locode varchar, lat double, lon double)")
    con.execute("insert into ports values (?, ?, ?, ?)", PORT)


def test_movement_distance_is_haversine_in_nautical_miles():
    con = duckdb.connect()
    # due north along a meridian: 0.1 degree of latitude = 6.00404 nm with R = 3440.065 nm
    _positions(con, [(366000001, T0 + timedelta(minutes=10 * i), 33.0 + 0.1 * i, -118.0, 12.0 + i, 0) for i in range(6)])
    out = run_sql(con, "vessel_movement", {"window_minutes": 60, "min_positions": 2, "stopped_max_sog_kn": 0.5, "port_radius_nm": 3.0, "berth_radius_nm": 1.0, "major_turn_deg": 45.0}).df()
    assert len(out) == 1
    row = out.iloc[0]
    assert row.n_positions == 6 and row.distance_nm == pytest.approx(5 * 6.00404, abs=0.001)
    assert row.mean_sog_kn == pytest.approx(14.5) and row.max_sog_kn == 17.0
    assert str(row.window_start) == "2024-01-15 06:00:00"
    # provenance: the xor of the md5s of its reports' row hashes as hex text (md5_number reads the
    # digest's bytes little-endian), the value it had when row_hash was text
    xor = 0
    for i in range(6):
        xor ^= int.from_bytes(hashlib.md5(row_hash(f"h{i}").encode()).digest(), "little")
    assert row.source_hash == f"{xor:032x}"


def test_movement_windows_split_and_skip_sparse_windows():
    con = duckdb.connect()
    rows = [(366000001, T0 + timedelta(minutes=5 * i), 33.0, -118.0 + 0.01 * i, 10.0, 0) for i in range(14)]  # 06:00-07:05
    _positions(con, rows)
    out = run_sql(con, "vessel_movement", {"window_minutes": 60, "min_positions": 3, "stopped_max_sog_kn": 0.5, "port_radius_nm": 3.0, "berth_radius_nm": 1.0, "major_turn_deg": 45.0}).df()
    assert list(out["n_positions"]) == [12]  # the 07:00 window has 2 reports: no fact


def test_port_call_arrival_departure_and_dwell():
    con = duckdb.connect()
    rows = [(366000002, T0 + timedelta(minutes=3 * i), 33.80, -118.20, 11.0, 0) for i in range(3)]      # far, underway
    rows += [(366000002, T0 + timedelta(minutes=9 + 3 * i), 33.705, -118.201, 0.1, 5) for i in range(16)]  # moored 06:09-06:54
    rows += [(366000002, T0 + timedelta(minutes=57 + 3 * i), 33.75, -118.20, 9.0, 0) for i in range(3)]  # leaving
    _positions(con, rows)
    out = run_sql(con, "port_calls", {"port_radius_nm": 3.0, "stopped_max_sog_kn": 0.5, "min_call_minutes": 30}).df()
    assert len(out) == 1
    call = out.iloc[0]
    assert call.locode == "USTST"
    assert str(call.arrival) == "2024-01-15 06:09:00" and str(call.departure) == "2024-01-15 06:54:00"
    assert call.dwell_minutes == pytest.approx(45.0)
    assert not call.arrival_before_data and not call.departure_after_data


def test_short_stops_and_stops_away_from_ports_are_not_calls():
    con = duckdb.connect()
    rows = [(366000003, T0 + timedelta(minutes=3 * i), 33.705, -118.20, 0.0, 5) for i in range(5)]        # 12 min only
    rows += [(366000004, T0 + timedelta(minutes=3 * i), 34.50, -119.50, 0.0, 1) for i in range(30)]       # anchored at sea
    _positions(con, rows)
    out = run_sql(con, "port_calls", {"port_radius_nm": 3.0, "stopped_max_sog_kn": 0.5, "min_call_minutes": 30}).df()
    assert out.empty


def test_missing_speed_falls_back_to_navigational_status():
    con = duckdb.connect()
    rows = [(366000005, T0 + timedelta(minutes=3 * i), 33.701, -118.199, None if i % 2 else 0.0, 5) for i in range(20)]
    _positions(con, rows)
    out = run_sql(con, "port_calls", {"port_radius_nm": 3.0, "stopped_max_sog_kn": 0.5, "min_call_minutes": 30}).df()
    assert len(out) == 1 and out.iloc[0].n_positions == 20  # SOG 102.3 (NULL) reports do not split the call
