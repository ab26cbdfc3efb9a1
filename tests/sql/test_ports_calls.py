"""Port calls, anchorage/berth stays, voyages and busiest ports on tiny handmade tracks written
straight into DuckDB (tables stg_ais_positions, stg_flagged_positions, ports)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb
import pandas as pd
import pytest

from tasks.config import FactsConfig
from tasks.facts import fact_params
from tasks.geo import destination, distance_nm
from tasks.sqlfiles import create_table_from_sql, run_sql
from tests.conftest import row_hash

T0 = datetime(2024, 1, 15, 6, 0, 0)
HARBOUR = ("Test Harbour", "USTST", 33.7000, -118.2000)
STAGED_SCHEMA = (
    "source_row bigint, source_file varchar, mmsi bigint, ts timestamp, lat double, lon double, sog_kn double, "
    "cog_deg double, heading_deg integer, rot_deg_min double, vessel_name varchar, imo varchar, call_sign varchar, "
    "vessel_type integer, nav_status integer, length_m double, width_m double, draft_m double, cargo integer, "
    "destination varchar, transceiver_class varchar, row_hash uuid"
)
# queries that read table fact_port_calls
NEEDS_CALLS = ("port_stays", "voyages", "busiest_ports")


def report(mmsi: int, ts: datetime, lat: float, lon: float, sog: float | None = 0.0, cog: float | None = None,
           status: int | None = None, vessel_type: int = 70) -> dict[str, Any]:
    return {"mmsi": mmsi, "ts": ts, "lat": lat, "lon": lon, "sog_kn": sog, "cog_deg": cog, "nav_status": status,
            "vessel_type": vessel_type}


def at(port: tuple, bearing: float, nm: float) -> tuple[float, float]:
    """A point `nm` nautical miles from a port on a bearing."""
    return destination(port[2], port[3], bearing, nm)


def positions_db(reports: list[dict], ports: list[tuple] = (HARBOUR,), flagged: list[dict] = ()) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"create table stg_ais_positions ({STAGED_SCHEMA})")
    con.execute(f"create table stg_flagged_positions ({STAGED_SCHEMA}, reject_reason varchar)")
    for table, rows, extra in (("stg_ais_positions", reports, ()), ("stg_flagged_positions", flagged, ("impossible_jump",))):
        for i, r in enumerate(rows):
            con.execute(
                f"insert into {table} (source_row, source_file, mmsi, ts, lat, lon, sog_kn, cog_deg, vessel_name, "
                f"vessel_type, nav_status, transceiver_class, row_hash{', reject_reason' if extra else ''}) "
                f"values (?, 'test.csv', ?, ?, ?, ?, ?, ?, 'SHIP', ?, ?, 'A', ?{', ?' if extra else ''})",
                [i, r["mmsi"], r["ts"], r["lat"], r["lon"], r["sog_kn"], r["cog_deg"], r["vessel_type"], r["nav_status"],
                 row_hash(f"{table[:3]}{i:06d}"), *extra],
            )
    con.execute("create table ports (port_name varchar, locode varchar, lat double, lon double)")
    con.executemany("insert into ports values (?, ?, ?, ?)", [list(p) for p in ports])
    return con


def fact(con: duckdb.DuckDBPyConnection, name: str, **config: Any) -> pd.DataFrame:
    """Run one fact query with the params compute_facts would give it (FactsConfig defaults + overrides)."""
    cfg = FactsConfig(**config)
    if name in NEEDS_CALLS:
        create_table_from_sql(con, "fact_port_calls", "port_calls", fact_params("port_calls", cfg))
    return run_sql(con, name, fact_params(name, cfg)).df()


def track(mmsi: int, start: datetime, minutes: range, lat: float, lon: float, **kw: Any) -> list[dict]:
    return [report(mmsi, start + timedelta(minutes=m), lat, lon, **kw) for m in minutes]


def visit(mmsi: int, start: datetime, port: tuple = HARBOUR, anchor_min: int = 0, berth_min: int = 60,
          status: bool = False) -> tuple[list[dict], datetime]:
    """Arrive from 10 nm out, wait at the anchorage (2 nm out), shift, moor 0.4 nm out, leave to 10 nm.
    Reports every 3 minutes; returns the reports and the time after the last one."""
    rows, t = [], start
    for nm in (10.0, 7.0, 4.0):
        rows.append(report(mmsi, t, *at(port, 180, nm), sog=12.0, cog=0.0, status=0 if status else None))
        t += timedelta(minutes=3)
    if anchor_min:
        rows += track(mmsi, t, range(0, anchor_min + 1, 3), *at(port, 180, 2.0), sog=0.1, status=1 if status else None)
        t += timedelta(minutes=anchor_min + 3)
        rows.append(report(mmsi, t, *at(port, 180, 1.2), sog=6.0, cog=0.0, status=0 if status else None))
        t += timedelta(minutes=3)
    rows += track(mmsi, t, range(0, berth_min + 1, 3), *at(port, 200, 0.4), sog=0.0, status=5 if status else None)
    t += timedelta(minutes=berth_min + 3)
    for nm in (4.0, 7.0, 10.0):
        rows.append(report(mmsi, t, *at(port, 180, nm), sog=12.0, cog=180.0, status=0 if status else None))
        t += timedelta(minutes=3)
    return rows, t


# --- port calls ----------------------------------------------------------------------------


def test_port_call_spans_anchorage_wait_and_berth_stay():
    rows, _ = visit(366000001, T0, anchor_min=45, berth_min=60)
    calls = fact(positions_db(rows), "port_calls")
    assert len(calls) == 1
    call = calls.iloc[0]
    # first stopped report: anchorage at 06:09; last: berth 06:09 + 48 (anchorage) + 3 (shift) + 60
    assert call.locode == "USTST" and str(call.arrival) == "2024-01-15 06:09:00"
    assert str(call.departure) == "2024-01-15 08:00:00" and call.dwell_minutes == pytest.approx(111.0)
    assert not call.arrival_before_data and not call.departure_after_data


def test_port_call_over_midnight_is_one_call_counted_on_both_days():
    rows, _ = visit(366000002, datetime(2024, 1, 15, 23, 0), berth_min=90)
    con = positions_db(rows)
    calls = fact(con, "port_calls")
    assert len(calls) == 1
    assert str(calls.iloc[0].arrival) == "2024-01-15 23:09:00" and str(calls.iloc[0].departure) == "2024-01-16 00:39:00"
    busiest = fact(con, "busiest_ports")
    assert busiest[["day", "locode", "vessels", "calls"]].astype(str).values.tolist() == [
        ["2024-01-15", "USTST", "1", "1"], ["2024-01-16", "USTST", "1", "1"]]
    # vessel-minutes in port are clipped to each day: 23:09-24:00 and 00:00-00:39
    assert busiest["vessel_minutes"].tolist() == pytest.approx([51.0, 39.0])


def test_two_ports_closer_than_the_radius_each_get_their_own_calls():
    north = ("North Quay", "USNQY", 33.7000, -118.2000)
    south = ("South Quay", "USSQY", 33.7000 - 2.0 / 60.04, -118.2000)  # 2 nm apart: inside each other's 3 nm radius
    rows, _ = visit(366000003, T0, port=north, berth_min=60)       # moors 0.4 nm from North: 1.6 nm from South
    other, _ = visit(366000004, T0, port=south, berth_min=60)
    third, _ = visit(366000005, T0 + timedelta(hours=1), port=south, berth_min=45)
    con = positions_db(rows + other + third, ports=[north, south])
    calls = fact(con, "port_calls")
    assert calls.set_index("mmsi")["locode"].to_dict() == {366000003: "USNQY", 366000004: "USSQY", 366000005: "USSQY"}
    busiest = fact(con, "busiest_ports")
    assert busiest[["locode", "vessels", "rank"]].values.tolist() == [["USSQY", 2, 1], ["USNQY", 1, 2]]


@pytest.mark.parametrize("port_lon, berth_lon", [(179.99, -179.995), (-179.99, 179.995)])
def test_port_across_the_antimeridian_is_found(port_lon, berth_lon):
    port = ("Dateline Harbour", "FJDTL", -16.75, port_lon)
    rows = track(366000006, T0, range(0, 61, 3), -16.75, berth_lon, sog=0.0)  # 0.86 nm across 180 degrees
    assert distance_nm(-16.75, port_lon, -16.75, berth_lon) < 1.0
    calls = fact(positions_db(rows, ports=[port]), "port_calls")
    assert calls["locode"].tolist() == ["FJDTL"] and calls.iloc[0].dwell_minutes == pytest.approx(60.0)


def test_moving_through_the_port_radius_is_no_call():
    rows = [report(366000007, T0 + timedelta(minutes=m), *at(HARBOUR, 90, 2.5 - 0.2 * m), sog=8.0) for m in range(25)]
    assert fact(positions_db(rows), "port_calls").empty


# --- port stays ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_status", [False, True])
def test_stays_split_anchorage_wait_from_berth_stay(with_status):
    rows, _ = visit(366000010, T0, anchor_min=45, berth_min=60, status=with_status)
    stays = fact(positions_db(rows), "port_stays")
    assert stays[["kind", "start", "end"]].astype(str).values.tolist() == [
        ["anchorage", "2024-01-15 06:09:00", "2024-01-15 06:54:00"],
        ["berth", "2024-01-15 07:00:00", "2024-01-15 08:00:00"],
    ]
    assert stays["minutes"].tolist() == [45.0, 60.0] and stays["n_positions"].tolist() == [16, 21]
    assert stays["stay_no"].tolist() == [1, 2] and not stays["truncated"].any()
    assert (stays["call_arrival"].astype(str) == "2024-01-15 06:09:00").all()


def test_vessel_status_decides_the_kind_before_the_distance():
    # moored (status 5) 1.3 nm from the port point: a berth, though farther than the berth radius
    rows = track(366000011, T0, range(0, 61, 3), *at(HARBOUR, 90, 1.3), sog=0.0, status=5)
    # at anchor (status 1) 0.5 nm out: an anchorage wait
    rows += track(366000012, T0, range(0, 61, 3), *at(HARBOUR, 90, 0.5), sog=0.0, status=1)
    # no status, 1.3 nm out: the distance says anchorage
    rows += track(366000013, T0, range(0, 61, 3), *at(HARBOUR, 270, 1.3), sog=0.0)
    stays = fact(positions_db(rows), "port_stays")
    assert stays.set_index("mmsi")["kind"].to_dict() == {366000011: "berth", 366000012: "anchorage", 366000013: "anchorage"}
    # every one of these is seen only stopped: the data cannot show the stays whole
    assert stays["truncated"].all()


def test_stay_truncated_only_at_the_data_edge():
    # the data starts while the vessel waits at anchor; it then moors and leaves
    rows = track(366000014, T0, range(0, 31, 3), *at(HARBOUR, 180, 2.0), sog=0.1)
    rows += track(366000014, T0 + timedelta(minutes=36), range(0, 61, 3), *at(HARBOUR, 200, 0.4), sog=0.0)
    rows += [report(366000014, T0 + timedelta(minutes=100), *at(HARBOUR, 180, 5.0), sog=12.0)]
    stays = fact(positions_db(rows), "port_stays")
    assert stays[["kind", "truncated"]].values.tolist() == [["anchorage", True], ["berth", False]]


# --- voyages -------------------------------------------------------------------------------


def test_voyages_run_from_departure_to_next_arrival():
    east = ("East Port", "USEST", 33.7000, -118.0000)
    rows, _ = visit(366000020, T0, port=HARBOUR, berth_min=60)   # in from sea, moored 06:09-07:09
    rows = [r for r in rows if r["ts"] <= T0 + timedelta(minutes=69)]
    t = T0 + timedelta(minutes=69)
    # east along 33.7 N at 10 kn, 07:15-07:57, then moored at East Port 08:03-08:48 and out to sea
    rows += [report(366000020, t + timedelta(minutes=6 * i), 33.7, -118.19 + 0.02 * i, sog=10.0, cog=90.0) for i in range(1, 9)]
    more, _ = visit(366000020, T0 + timedelta(minutes=114), port=east, berth_min=45)
    rows += more[3:]  # without visit()'s approach from the south: the passage above is the approach
    voyages = fact(positions_db(rows, ports=[HARBOUR, east]), "voyages")
    assert voyages[["from_locode", "to_locode", "truncated"]].fillna("-").values.tolist() == [
        ["-", "USTST", True], ["USTST", "USEST", False], ["USEST", "-", True]]
    passage = voyages.iloc[1]
    assert str(passage.departure) == "2024-01-15 07:09:00"   # last berth report at Test Harbour
    assert str(passage.arrival) == "2024-01-15 08:03:00"     # first berth report at East Port
    assert passage.duration_minutes == pytest.approx(54.0)
    inside = [r for r in rows if passage.departure <= pd.Timestamp(r["ts"]) <= passage.arrival]
    expected = sum(distance_nm(a["lat"], a["lon"], b["lat"], b["lon"]) for a, b in zip(inside, inside[1:]))
    assert passage.distance_nm == pytest.approx(expected) and passage.n_positions == len(inside) == 10
    assert passage.n_segments == 1 and passage.max_sog_kn == 10.0


def test_starting_to_move_inside_the_port_is_no_voyage():
    # seen first moving slowly inside the radius, then moored: no passage from sea before the call
    rows = [report(366000021, T0 + timedelta(minutes=3 * i), *at(HARBOUR, 90, 2.0 - 0.3 * i), sog=3.0) for i in range(5)]
    rows += track(366000021, T0 + timedelta(minutes=15), range(0, 61, 3), *at(HARBOUR, 90, 0.4), sog=0.0)
    voyages = fact(positions_db(rows), "voyages")
    assert voyages.empty
