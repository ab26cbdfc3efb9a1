"""Traffic density per hour, grid cell and vessel type on tiny handmade reports in DuckDB."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest

from tests.sql.test_ports_calls import fact, positions_db, report

T0 = datetime(2024, 1, 15, 6, 0, 0)


def _cell(frame, hour, lat_idx, lon_idx, vessel_type):
    hit = frame[(frame.hour.astype(str) == hour) & (frame.cell_lat_idx == lat_idx) & (frame.cell_lon_idx == lon_idx)
                & (frame.vessel_type_code == vessel_type)]
    assert len(hit) == 1, frame
    return hit.iloc[0]


def test_distinct_vessels_per_hour_cell_and_type():
    rows = [report(366000201, T0 + timedelta(minutes=m), 33.72, -118.25) for m in (0, 10, 20)]          # cargo
    rows += [report(366000202, T0 + timedelta(minutes=5), 33.75, -118.22)]                              # cargo, same cell
    rows += [report(366000203, T0 + timedelta(minutes=7), 33.79, -118.21, vessel_type=80)]              # tanker, same cell
    rows += [report(366000202, T0 + timedelta(minutes=30), 33.81, -118.22)]                             # cargo moves north a cell
    rows += [report(366000201, T0 + timedelta(minutes=60), 33.72, -118.25)]                             # next hour
    traffic = fact(positions_db(rows), "traffic_density")
    # floor(33.72 / 0.1) = 337, floor(-118.25 / 0.1) = -1183; 33.81 -> 338
    cargo = _cell(traffic, "2024-01-15 06:00:00", 337, -1183, 70)
    assert (cargo.vessels, cargo.n_reports) == (2, 4)
    assert _cell(traffic, "2024-01-15 06:00:00", 337, -1183, 80).vessels == 1
    assert _cell(traffic, "2024-01-15 06:00:00", 338, -1183, 70).vessels == 1
    assert _cell(traffic, "2024-01-15 07:00:00", 337, -1183, 70).vessels == 1
    assert len(traffic) == 4
    # spherical cell area between 33.7 and 33.8 N, 0.1 degree wide: about (6.004 nm)^2 * cos(33.75)
    area = 3440.065 ** 2 * math.radians(0.1) * (math.sin(math.radians(33.8)) - math.sin(math.radians(33.7)))
    assert cargo.cell_area_nm2 == pytest.approx(area) and area == pytest.approx(6.004 ** 2 * math.cos(math.radians(33.75)), rel=1e-3)
    assert cargo.density_per_nm2 == pytest.approx(2 / area)


def test_cell_size_is_configurable_and_flagged_reports_count():
    rows = [report(366000204, T0, 33.72, -118.25), report(366000205, T0, 33.95, -118.05)]
    flagged = [report(366000206, T0 + timedelta(minutes=1), 33.5, -118.4)]   # a report staging flagged: still sent from there
    traffic = fact(positions_db(rows, flagged=flagged), "traffic_density", traffic_cell_deg=0.5)
    assert traffic[["cell_lat_idx", "cell_lon_idx", "vessels"]].values.tolist() == [[67, -237, 3]]
    # 0.5 degree = 30.02 nm of latitude; longitude shrinks by cos(33.75 N)
    assert traffic.iloc[0].cell_area_nm2 == pytest.approx(30.02 ** 2 * math.cos(math.radians(33.75)), rel=1e-3)


def test_cells_either_side_of_the_antimeridian_and_unknown_type():
    rows = [report(366000207, T0, -16.75, 179.95), report(366000208, T0, -16.75, -179.95, vessel_type=None)]
    traffic = fact(positions_db(rows), "traffic_density").sort_values("cell_lon_idx")
    assert traffic[["cell_lat_idx", "cell_lon_idx"]].values.tolist() == [[-168, -1800], [-168, 1799]]
    assert traffic["vessel_type_code"].isna().tolist() == [True, False]
    assert (traffic["cell_area_nm2"] > 0).all()
