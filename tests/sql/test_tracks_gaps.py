"""AIS gaps, track segments and movement stats (time underway / moored / anchored, major course
changes) on tiny handmade tracks written straight into DuckDB."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest

from tasks.geo import distance_nm
from tests.conftest import row_hash
from tests.sql.test_ports_calls import HARBOUR, at, fact, positions_db, report

T0 = datetime(2024, 1, 15, 6, 0, 0)


def _steps(times_min: list[float], mmsi: int = 366000100, lat0: float = 33.0) -> list[dict]:
    """Reports at the given minutes after T0, steaming north 0.01 degree per report."""
    return [report(mmsi, T0 + timedelta(minutes=m), lat0 + 0.01 * i, -118.5, sog=10.0, cog=0.0) for i, m in enumerate(times_min)]


# --- gaps ----------------------------------------------------------------------------------


def test_gap_exactly_at_the_threshold_is_not_a_gap():
    rows = _steps([0, 5, 35])                                      # 30:00 apart: no gap
    rows += _steps([0, 5, 35 + 1 / 60], mmsi=366000101)            # 30:01 apart: a gap
    gaps = fact(positions_db(rows), "ais_gaps")
    assert gaps["mmsi"].tolist() == [366000101]
    gap = gaps.iloc[0]
    assert str(gap.gap_start) == "2024-01-15 06:05:00" and str(gap.gap_end) == "2024-01-15 06:35:01"
    assert gap.minutes == pytest.approx(30 + 1 / 60)
    assert (gap.start_lat, gap.end_lat) == pytest.approx((33.01, 33.02)) and gap.start_lon == gap.end_lon == -118.5
    assert gap.distance_nm == pytest.approx(distance_nm(33.01, -118.5, 33.02, -118.5))
    assert gap.implied_sog_kn == pytest.approx(gap.distance_nm / gap.minutes * 60)
    # provenance: the md5 of its two reports' row hashes as hex text (the value it had when row_hash was text)
    assert gap.source_hash == hashlib.md5(f"{row_hash('stg000004')},{row_hash('stg000005')}".encode()).hexdigest()
    # a lower threshold finds the 30:00 silence too
    assert len(fact(positions_db(rows), "ais_gaps", gap_minutes=29.9)) == 2


def test_gap_over_midnight_is_one_gap():
    rows = [report(366000102, datetime(2024, 1, 15, 23, 50) + timedelta(minutes=m), 33.0, -118.5 + 0.01 * i, sog=9.0)
            for i, m in enumerate([0, 3, 6, 70, 73])]              # 23:56 -> 01:00 next day
    gaps = fact(positions_db(rows), "ais_gaps")
    assert gaps[["gap_start", "gap_end"]].astype(str).values.tolist() == [["2024-01-15 23:56:00", "2024-01-16 01:00:00"]]
    assert gaps.iloc[0].minutes == pytest.approx(64.0)


def test_reports_staging_flagged_still_end_a_dark_period():
    rows = _steps([0, 5, 65])
    # one report flagged as an impossible jump 30 minutes in: the transmitter was heard, so two 30-minute silences
    spike = [report(366000100, T0 + timedelta(minutes=35), 34.0, -118.5, sog=10.0)]
    assert len(fact(positions_db(rows), "ais_gaps")) == 1
    assert fact(positions_db(rows, flagged=spike), "ais_gaps").empty


# --- track segments ------------------------------------------------------------------------


def test_track_segments_split_on_gaps_over_the_threshold():
    rows = _steps([0, 10, 20, 50, 60, 100, 110])                   # silences: 30 (no split), 40 (split)
    segments = fact(positions_db(rows), "track_segments")
    assert segments[["segment_no", "n_positions"]].values.tolist() == [[1, 5], [2, 2]]
    first, second = segments.iloc[0], segments.iloc[1]
    assert str(first.start) == "2024-01-15 06:00:00" and str(first.end) == "2024-01-15 07:00:00"
    assert first.distance_nm == pytest.approx(distance_nm(33.0, -118.5, 33.04, -118.5))
    # the step across the gap belongs to neither segment
    assert second.distance_nm == pytest.approx(distance_nm(33.05, -118.5, 33.06, -118.5))
    assert second.gap_before_minutes == pytest.approx(40.0) and first.gap_before_minutes != first.gap_before_minutes
    assert (second.start_lat, second.end_lat) == pytest.approx((33.05, 33.06))
    assert first.starts_with_data and not first.ends_with_data and second.ends_with_data


def test_voyage_counts_the_segments_it_spans():
    from tests.sql.test_ports_calls import track
    east = ("East Port", "USEST", 33.7000, -118.0000)
    rows = track(366000103, T0, range(0, 61, 3), *at(HARBOUR, 0, 0.3), sog=0.0)                 # moored 06:00-07:00
    rows += [report(366000103, T0 + timedelta(minutes=m), 33.7, -118.17 + 0.01 * i, sog=10.0)   # dark 07:20-08:10
             for i, m in enumerate([65, 70, 75, 80, 130, 135, 140])]
    rows += track(366000103, T0 + timedelta(minutes=150), range(0, 61, 3), *at(east, 0, 0.3), sog=0.0)
    voyage = fact(positions_db(rows, ports=[HARBOUR, east]), "voyages").iloc[0]
    assert (voyage.from_locode, voyage.to_locode, voyage.n_segments) == ("USTST", "USEST", 2)
    assert voyage.max_gap_minutes == pytest.approx(50.0)


# --- movement: underway / moored / anchored, course changes --------------------------------


def test_time_is_split_by_the_earlier_reports_state():
    mmsi = 366000110
    rows = [report(mmsi, T0 + timedelta(minutes=5 * i), *at(HARBOUR, 180, 6.0 - 0.8 * i), sog=10.0, cog=0.0) for i in range(6)]
    rows += [report(mmsi, T0 + timedelta(minutes=30 + 5 * i), *at(HARBOUR, 180, 0.5), sog=0.0) for i in range(6)]
    movement = fact(positions_db(rows), "vessel_movement")
    row = movement.iloc[0]
    # 06:00-06:30: six underway reports, each counts the 5 minutes to the next; 06:30-06:55 at a berth (no status)
    assert (row.minutes_underway, row.minutes_moored, row.minutes_anchored) == pytest.approx((30.0, 25.0, 0.0))
    assert row.major_course_changes == 0


@pytest.mark.parametrize("where, sog, status, state", [
    (("port", 2.0), 0.1, None, "anchored"),      # stopped at the anchorage, no status
    (("port", 0.5), 0.2, None, "moored"),        # stopped within the berth radius, no status
    (("port", 2.0), 0.0, 5, "moored"),           # the vessel says moored
    (("sea", 20.0), 0.0, 1, "anchored"),         # the vessel says at anchor, far from any port
    (("sea", 20.0), 0.3, None, "underway"),      # stopped at sea without anchor status: drifting
    (("sea", 20.0), None, None, "underway"),     # neither SOG nor status: the previous report's state
    (("port", 0.5), 4.0, 5, "underway"),         # moving at 4 kn: underway whatever the status says
])
def test_state_rule(where, sog, status, state):
    mmsi = 366000111
    point = at(HARBOUR, 90, where[1])
    # two underway reports 10 minutes apart first, so a report without SOG or status inherits underway
    rows = [report(mmsi, T0 + timedelta(minutes=m), *at(HARBOUR, 90, where[1] + 0.01), sog=8.0, cog=90.0) for m in (0, 5)]
    rows += [report(mmsi, T0 + timedelta(minutes=10 + 5 * i), *point, sog=sog, status=status) for i in range(6)]
    row = fact(positions_db(rows), "vessel_movement", min_window_positions=2).iloc[0]
    minutes = {"underway": row.minutes_underway, "moored": row.minutes_moored, "anchored": row.minutes_anchored}
    # 10 minutes from the underway reports, 25 between the six test reports
    expected = {"underway": 10.0, "moored": 0.0, "anchored": 0.0}
    expected[state] += 25.0
    assert minutes == pytest.approx(expected)


def test_major_course_changes_between_moving_reports():
    mmsi = 366000112
    cogs = [
        (90.0, 10.0), (92.0, 10.0), (150.0, 10.0),   # +58: one
        (170.0, 10.0),                               # +20: none
        (300.0, 0.0),                                # stopped: breaks the run, its COG is not a course
        (300.0, 10.0),                               # after a stop: not compared with 170
        (None, 10.0),                                # COG not available: skipped
        (10.0, 10.0),                                # 300 -> 10 across north = 70: one
        (340.0, 10.0),                               # -30: none
        (100.0, 10.0),                               # 340 -> 100 = 120: one
    ]
    rows = [report(mmsi, T0 + timedelta(minutes=3 * i), 33.0, -119.0 + 0.01 * i, sog=sog, cog=cog) for i, (cog, sog) in enumerate(cogs)]
    row = fact(positions_db(rows), "vessel_movement").iloc[0]
    assert row.major_course_changes == 3
    assert fact(positions_db(rows), "vessel_movement", major_turn_deg=60).iloc[0].major_course_changes == 2


def test_movement_windows_split_at_midnight():
    mmsi = 366000113
    rows = [report(mmsi, datetime(2024, 1, 15, 23, 30) + timedelta(minutes=5 * i), 33.0, -119.0 + 0.01 * i, sog=9.0, cog=90.0)
            for i in range(12)]                    # 23:30-00:25
    movement = fact(positions_db(rows), "vessel_movement")
    assert movement["window_start"].astype(str).tolist() == ["2024-01-15 23:00:00", "2024-01-16 00:00:00"]
    assert movement["n_positions"].tolist() == [6, 6]
    # the 23:55 -> 00:00 step crosses the window edge: counted in neither window
    assert movement["minutes_underway"].tolist() == pytest.approx([25.0, 25.0])
