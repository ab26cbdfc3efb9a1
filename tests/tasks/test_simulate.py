import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import SimulateConfig
from tasks.errors import ConfigError, InputError
from tasks.ports import load_ports
from tasks.simulate import NOAA_COLUMNS, TRUTH_NAMES, US_MIDS, build_harbour, simulate, simulate_ais_task

NOAA_SAMPLE = Path("/work/shared/data/ais/noaa_marinecadastre_AIS_2022-01-03_first99999.csv.gz")
HEADER = "MMSI,BaseDateTime,LAT,LON,SOG,COG,Heading,VesselName,IMO,CallSign,VesselType,Status,Length,Width,Draft,Cargo,TransceiverClass"

# What a NOAA MarineCadastre field may look like (checked against the real sample below).
NOAA_FIELD = {
    "MMSI": r"\d{7,10}",
    "BaseDateTime": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}",
    "LAT": r"-?\d{1,2}\.\d{1,5}",
    "LON": r"-?\d{1,3}\.\d{1,5}",
    "SOG": r"\d{1,3}\.\d",
    "COG": r"\d{1,3}\.\d",
    "Heading": r"\d{1,3}",
    "VesselName": r"[^,]*",
    "IMO": r"(IMO\d{7,10})?",
    "CallSign": r"[^,]*",
    "VesselType": r"\d{0,3}",
    "Status": r"(\d{1,2})?",
    "Length": r"\d{0,3}",
    "Width": r"\d{0,3}",
    "Draft": r"(\d{1,2}\.\d)?",
    "Cargo": r"\d{0,3}",
    "TransceiverClass": r"[AB]",
}
# The simulator writes NOAA's own (pre-R) format: exactly 5 decimals on positions; clean IMO/type.
SIMULATED_FIELD = NOAA_FIELD | {
    "LAT": r"-?\d{1,2}\.\d{5}",
    "LON": r"-?\d{1,3}\.\d{5}",
    "IMO": r"(IMO\d{7})?",
    "CallSign": r"[A-Z0-9]*",
    "VesselType": r"\d{2}",
}
TYPE_CODES = {
    "cargo": range(70, 80),
    "tanker": range(80, 90),
    "passenger": range(60, 70),
    "fishing": {30},
    "tug": {31, 52},
    "pleasure": {37},
}


def _distance_nm(lat1, lon1, lat2, lon2):
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    h = np.sin((phi2 - phi1) / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * 3440.065 * np.arcsin(np.sqrt(h))


def _field_mismatches(frame: pd.DataFrame, rules: dict[str, str]) -> dict[str, list[str]]:
    bad = {}
    for column, pattern in rules.items():
        ok = frame[column].str.fullmatch(pattern)
        if not ok.all():
            bad[column] = frame.loc[~ok, column].head(3).tolist()
    return bad


def _read_text_columns(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """The default config: 30 vessels (+2 invalid MMSI), 24 h."""
    out = tmp_path_factory.mktemp("sim-day")
    result = simulate(SimulateConfig(), load_ports(), out)
    ais = pd.read_csv(result.csv_path, keep_default_na=True)
    ais["ts"] = pd.to_datetime(ais["BaseDateTime"])
    truth = pd.read_csv(result.port_calls_path, parse_dates=["arrival", "departure"])
    gaps = pd.read_csv(result.gaps_path, parse_dates=["gap_start", "gap_end"])
    vessels = pd.read_csv(result.vessels_path, keep_default_na=False)
    return result, ais, truth, gaps, vessels


def test_noaa_field_rules_accept_the_real_sample():
    if not NOAA_SAMPLE.is_file():
        pytest.skip(f"{NOAA_SAMPLE} not present")
    with gzip.open(NOAA_SAMPLE, "rt") as handle:
        assert handle.readline().strip() == HEADER
    sample = pd.read_csv(NOAA_SAMPLE, dtype=str, keep_default_na=False, nrows=20_000)
    assert _field_mismatches(sample, NOAA_FIELD) == {}


def test_csv_matches_noaa_format(day):
    result, _, _, _, _ = day
    assert result.csv_path.read_text().splitlines()[0] == HEADER == ",".join(NOAA_COLUMNS)
    text = _read_text_columns(result.csv_path)
    assert len(text) == result.rows
    assert _field_mismatches(text, SIMULATED_FIELD) == {}
    class_b = text["TransceiverClass"] == "B"
    assert (text.loc[class_b, "Status"] == "").all() and (text.loc[class_b, "Heading"] == "511").all()
    assert text.loc[~class_b, "Status"].isin(["0", "1", "5", "7"]).all()
    assert text["Heading"].astype(int).between(0, 359).where(text["Heading"] != "511", True).all()
    assert text["BaseDateTime"].iloc[0] >= "2024-01-15T00:00:00"
    assert text["BaseDateTime"].iloc[-1] < "2024-01-16T00:00:00"


def test_rows_are_sorted_by_time_then_mmsi(day):
    _, ais, _, _, _ = day
    keys = list(zip(ais["BaseDateTime"], ais["MMSI"]))
    assert keys == sorted(keys)


def test_same_config_same_bytes_other_seed_differs(tmp_path):
    cfg = SimulateConfig(vessels=8, hours=6, seed=3)
    ports = load_ports()
    first = simulate(cfg, ports, tmp_path / "a")
    second = simulate(cfg, ports, tmp_path / "b")
    other = simulate(cfg.model_copy(update={"seed": 4}), ports, tmp_path / "c")
    for name in ("csv_path", "port_calls_path", "gaps_path", "vessels_path"):
        assert getattr(first, name).read_bytes() == getattr(second, name).read_bytes(), name
    for name, path in first.truth_paths.items():
        assert path.read_bytes() == second.truth_paths[name].read_bytes(), name
    assert first.csv_path.read_bytes() != other.csv_path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        ["ais.csv", "ground_truth_gaps.csv", "ground_truth_port_calls.csv", "vessels.csv"]
        + [f"ground_truth_{name}.csv" for name in TRUTH_NAMES]
    )


def test_every_vessel_type_is_present_with_plausible_particulars(day):
    result, ais, _, _, vessels = day
    assert result.vessels == len(vessels) == 32
    valid = vessels[vessels["valid_mmsi"]]
    assert set(valid["vessel_type"]) == set(TYPE_CODES)
    for row in vessels.itertuples():
        assert row.vessel_type_code in TYPE_CODES[row.vessel_type], row
    assert all(len(str(m)) == 9 and int(str(m)[:3]) in US_MIDS for m in valid["mmsi"])
    assert (vessels.loc[vessels["vessel_type"] == "pleasure", "transceiver_class"] == "B").all()
    assert set(vessels.loc[vessels["transceiver_class"] == "B", "vessel_type"]) <= {"pleasure", "fishing"}
    big = vessels[vessels["vessel_type"].isin(["cargo", "tanker"])]
    assert big["length"].between(120, 300).all()
    in_csv = ais.groupby("MMSI")["VesselType"].first()
    assert (in_csv.loc[vessels["mmsi"]].to_numpy() == vessels["vessel_type_code"].to_numpy()).all()


def test_some_vessels_start_underway_and_some_moored(day):
    _, ais, _, _, _ = day
    first_sog = ais.sort_values("ts").groupby("MMSI")["SOG"].first()
    first_sog = first_sog[first_sog != 102.3]
    assert (first_sog > 2).any() and (first_sog <= 0.3).any()


def test_port_calls_agree_with_the_reports(day):
    _, ais, truth, _, _ = day
    ports = load_ports().set_index("locode")
    assert len(truth) >= 30 and truth["truncated"].any() and (~truth["truncated"]).any()
    assert (truth["anchored_minutes"] > 0).any()
    by_vessel = dict(tuple(ais.groupby("MMSI")))
    for call in truth.itertuples():
        rows = by_vessel[call.mmsi]
        inside = rows[(rows["ts"] >= call.arrival) & (rows["ts"] <= call.departure)]
        assert inside["ts"].min() == call.arrival and inside["ts"].max() == call.departure
        fixed = inside[(inside["LAT"] <= 90) & (inside["LON"] <= 180)]
        distance = _distance_nm(
            fixed["LAT"].to_numpy()[:, None], fixed["LON"].to_numpy()[:, None], ports["lat"].to_numpy(), ports["lon"].to_numpy()
        )
        near = distance <= 3
        assert near[:, ports.index.get_loc(call.locode)].all() and (near.sum(axis=1) == 1).all(), call
        moving = inside[(inside["SOG"] > 0.5) & (inside["SOG"] != 102.3)]
        if call.anchored_minutes == 0:
            assert moving.empty, call
        elif not moving.empty:  # the shift from anchorage to berth, inside the port's 3 nm
            assert moving["ts"].max() - moving["ts"].min() <= pd.Timedelta(minutes=40), call
            assert moving["ts"].min() >= call.arrival + pd.Timedelta(minutes=call.anchored_minutes), call
        if not call.truncated:
            assert call.departure - call.arrival >= pd.Timedelta(minutes=30)
            before = rows[rows["ts"] < call.arrival]
            after = rows[rows["ts"] > call.departure]
            assert before["SOG"].iloc[-1] > 0.5 and after["SOG"].iloc[0] > 0.5, call


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_berths_and_anchorages_are_within_3_nm_of_their_port_only(seed):
    ports = load_ports()
    harbour = build_harbour(ports, np.random.default_rng(seed))
    own = np.arange(len(ports))
    for points, farthest in ((harbour.berths, 1.0), (harbour.anchorages, 2.5)):
        dist = _distance_nm(points[..., 0, None], points[..., 1, None], ports["lat"].to_numpy(), ports["lon"].to_numpy())
        to_own = dist[own, :, own]
        dist[own, :, own] = np.inf
        assert to_own.max() <= farthest + 1e-6
        assert dist.min() > 3.0


def test_every_stopped_report_belongs_to_a_port_call(day):
    _, ais, truth, _, vessels = day
    valid = set(vessels.loc[vessels["valid_mmsi"], "mmsi"])
    stopped = ais[(ais["SOG"] <= 0.5) & ais["MMSI"].isin(valid)].sort_values("ts")
    calls = truth.sort_values("arrival")
    matched = pd.merge_asof(stopped, calls, left_on="ts", right_on="arrival", left_by="MMSI", right_by="mmsi")
    assert matched["departure"].notna().all()
    assert (matched["ts"] <= matched["departure"]).all()


def test_gaps_are_dark_periods_of_the_configured_length(day):
    _, ais, _, gaps, vessels = day
    cfg = SimulateConfig()
    assert len(gaps) == round(cfg.gap_vessel_share * cfg.vessels)
    assert set(gaps["mmsi"]) <= set(vessels.loc[vessels["valid_mmsi"], "mmsi"])
    for gap in gaps.itertuples():
        times = ais.loc[ais["MMSI"] == gap.mmsi, "ts"]
        assert not ((times > gap.gap_start) & (times < gap.gap_end)).any()
        assert (times == gap.gap_start).any() and (times == gap.gap_end).any()
        length = (gap.gap_end - gap.gap_start).total_seconds() / 60
        assert gap.minutes == pytest.approx(length, abs=0.01)
        assert cfg.gap_minutes[0] <= gap.minutes <= cfg.gap_minutes[1] + 8
    # apart from planted gaps, no vessel is silent for more than 2 report intervals
    steps = ais.drop_duplicates(["MMSI", "ts"]).sort_values(["MMSI", "ts"])
    steps["silence"] = steps.groupby("MMSI")["ts"].diff().dt.total_seconds()
    planted = steps.set_index(["MMSI", "ts"]).index.isin(list(zip(gaps["mmsi"], gaps["gap_end"])))
    assert steps.loc[~planted, "silence"].max() <= 400


def test_dirty_values_are_present_as_noaa_has_them(day):
    result, ais, truth, gaps, vessels = day
    cfg = SimulateConfig()
    assert (ais["SOG"] == 102.3).sum() >= 0.3 * cfg.dirty_row_share * len(ais)
    assert (ais["COG"] == 360.0).sum() >= 0.3 * cfg.dirty_row_share * len(ais)
    assert (ais["Heading"] == 511).any()
    assert ((ais["LAT"] == 91.0) & (ais["LON"] == 181.0)).sum() == 5
    lines = result.csv_path.read_text().splitlines()[1:]
    assert len(lines) - len(set(lines)) >= 0.5 * cfg.duplicate_row_share * len(lines)
    invalid = vessels.loc[~vessels["valid_mmsi"], "mmsi"]
    assert len(invalid) == cfg.invalid_mmsi_vessels
    assert all(len(str(m)) != 9 or not 2 <= int(str(m)[0]) <= 7 for m in invalid)
    assert set(invalid) <= set(ais["MMSI"])
    assert not set(invalid) & (set(truth["mmsi"]) | set(gaps["mmsi"]))


def test_moored_anchored_and_underway_speeds(day):
    result, ais, _, _, vessels = day
    rows = ais[ais["SOG"] != 102.3].merge(vessels, left_on="MMSI", right_on="mmsi")
    # leave out the planted transponder glitches and twin transmitters (checked by their own tests)
    for name in ("speed_anomalies", "identity_conflicts"):
        for event in _truth(result, name).itertuples():
            rows = rows[~((rows["MMSI"] == event.mmsi) & rows["ts"].between(event.start, event.end))]
    status = rows["Status"]
    assert rows.loc[status == 5, "SOG"].max() <= 0.2
    assert rows.loc[status == 1, "SOG"].max() <= 0.3
    # status 0 also covers the 5-8 kn shift from anchorage to berth, so only faster rows are sea legs
    sea_legs = rows[(status == 0) & (rows["SOG"] > 8.2)]
    for kind, (low, high) in {"cargo": (12, 18), "tanker": (10, 15), "passenger": (15, 22)}.items():
        speeds = sea_legs.loc[sea_legs["vessel_type"] == kind, "SOG"]
        assert not speeds.empty and speeds.between(low - 0.2, high + 0.2).all(), kind
    tugs = rows[(status == 0) & (rows["vessel_type"] == "tug")]
    assert tugs["SOG"].between(5.8, 10.2).all()


def test_ports_too_close_for_unambiguous_calls_are_rejected(tmp_path):
    ports = pd.DataFrame(
        {"port_name": ["A", "B"], "locode": ["USAAA", "USBBB"], "lat": [33.70, 33.71], "lon": [-118.20, -118.20]}
    )
    with pytest.raises(InputError, match="USAAA and USBBB are only 0.6 nm apart"):
        simulate(SimulateConfig(vessels=2, hours=1), ports, tmp_path)


def test_inverted_gap_range_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="gap_minutes"):
        simulate(SimulateConfig(vessels=2, hours=1, gap_minutes=(90, 45)), load_ports(), tmp_path)


def test_prefect_task_wraps_the_plain_function():
    assert simulate_ais_task.fn is simulate
    assert simulate_ais_task.name == "simulate-ais"
    assert simulate_ais_task.retries == 0


# --- ground truth of the facts contract (issue 4) --------------------------------------------

TRUTH_COLUMNS = {
    "port_stays": ["mmsi", "locode", "kind", "start", "end", "truncated"],
    "voyages": ["mmsi", "from_locode", "to_locode", "departure", "arrival", "truncated"],
    "loitering": ["mmsi", "start", "end", "center_lat", "center_lon"],
    "speed_anomalies": ["mmsi", "vessel_type_code", "start", "end", "max_sog_kn"],
    "identity_conflicts": ["mmsi", "start", "end", "lat_a", "lon_a", "lat_b", "lon_b"],
    "jumps": ["mmsi", "ts"],
    "encounters": ["mmsi_a", "mmsi_b", "situation", "cpa_time", "cpa_nm", "planted", "borderline", "situation_borderline"],
    "traffic": ["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code", "vessels"],
    "movement": ["mmsi", "window_start", "distance_nm", "minutes_underway", "minutes_moored", "minutes_anchored",
                 "major_course_changes"],
}  # fmt: skip
TIME_COLUMNS = {"start", "end", "departure", "arrival", "ts", "cpa_time", "hour", "window_start"}


def _truth(result, name: str) -> pd.DataFrame:
    frame = pd.read_csv(result.truth_paths[name], keep_default_na=False, dtype=str)
    for column in set(frame.columns) & TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column].replace("", None))
    for column in set(frame.columns) & {"mmsi", "mmsi_a", "mmsi_b"}:
        frame[column] = frame[column].astype(np.int64)
    return frame


def _own_reports(ais: pd.DataFrame, mmsi: int) -> pd.DataFrame:
    """One vessel's reports with a position, without twins' and spikes' rows (far from the track)."""
    rows = ais[(ais["MMSI"] == mmsi) & (ais["LAT"] <= 90)].drop_duplicates(["ts", "LAT", "LON"]).sort_values("ts")
    step = _distance_nm(rows["LAT"].to_numpy()[:-1], rows["LON"].to_numpy()[:-1], rows["LAT"].to_numpy()[1:], rows["LON"].to_numpy()[1:])
    far = np.r_[step > 5, True] & np.r_[True, step > 5]  # as staging's jump rule: far from both neighbours
    return rows[~far]


def test_truth_files_have_the_contract_columns_and_time_format(day):
    result = day[0]
    assert set(result.truth_paths) == set(TRUTH_NAMES) == set(TRUTH_COLUMNS)
    for name, columns in TRUTH_COLUMNS.items():
        text = pd.read_csv(result.truth_paths[name], keep_default_na=False, dtype=str)
        assert list(text.columns) == columns, name
        assert not text.empty, name
        for column in set(columns) & TIME_COLUMNS:
            filled = text[column][text[column] != ""]
            assert filled.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").all(), (name, column)
        for column in set(columns) & {"truncated", "planted", "borderline", "situation_borderline"}:
            assert text[column].isin(["true", "false"]).all(), (name, column)


def test_every_colreg_type_is_planted_and_the_written_reports_show_the_approach(day):
    result, ais, _, _, _ = day
    encounters = _truth(result, "encounters")
    planted = encounters[encounters["planted"] == "true"]
    assert set(planted["situation"]) == {"head_on", "crossing", "overtaking"}
    assert (encounters["mmsi_a"] < encounters["mmsi_b"]).all()
    # firm rows meet the CPA limit; borderline ones are near misses within the noise band at most
    firm = encounters["borderline"] == "false"
    assert encounters.loc[firm, "cpa_nm"].astype(float).le(0.5).all()
    assert firm.sum() > (~firm).sum() > 0
    assert (planted["borderline"] == "false").all()  # planted passes are well inside every limit
    ports = load_ports()
    for row in planted.itertuples():
        at = {}
        for mmsi in (row.mmsi_a, row.mmsi_b):
            own = _own_reports(ais, mmsi)
            seconds = (own["ts"] - row.cpa_time).dt.total_seconds().to_numpy()
            assert seconds.min() <= 0 <= seconds.max(), row  # reports on both sides of the CPA
            assert np.abs(seconds).min() <= 200, row
            at[mmsi] = (np.interp(0, seconds, own["LAT"]), np.interp(0, seconds, own["LON"]))
            assert own.loc[np.abs(seconds) <= 1200, "SOG"].replace(102.3, np.nan).dropna().ge(2.0).all(), row
        # reports interpolated to the CPA time: as close as the truth says (+ GPS noise and 2-minute sampling)
        apart = _distance_nm(*at[row.mmsi_a], *at[row.mmsi_b])
        assert apart <= float(row.cpa_nm) + 0.1, (row, apart)
        clear = _distance_nm(at[row.mmsi_a][0], at[row.mmsi_a][1], ports["lat"].to_numpy(), ports["lon"].to_numpy())
        assert clear.min() > 3.0, row


def test_twin_reports_share_the_mmsi_and_sit_far_from_the_vessel(day):
    result, ais, _, _, vessels = day
    conflicts = _truth(result, "identity_conflicts")
    assert len(conflicts) >= 1
    for row in conflicts.itertuples():
        rows = ais[(ais["MMSI"] == row.mmsi) & ais["ts"].between(row.start, row.end)].drop_duplicates(["ts", "LAT", "LON"])
        assert rows[["VesselName", "IMO", "CallSign", "VesselType", "Length"]].astype(str).drop_duplicates().shape[0] == 1
        assert _distance_nm(float(row.lat_a), float(row.lon_a), float(row.lat_b), float(row.lon_b)) >= 20
        # two clusters at once: each twin report is >= 20 nm from the vessel's own report just before it
        own = _own_reports(ais, row.mmsi)
        twins = rows[~rows["ts"].isin(own["ts"])]
        assert len(twins) >= 2 and twins["ts"].min() == row.start and twins["ts"].max() == row.end
        previous = pd.merge_asof(twins.sort_values("ts"), own[["ts", "LAT", "LON"]], on="ts", suffixes=("", "_own"))
        gap = _distance_nm(previous["LAT"], previous["LON"], previous["LAT_own"], previous["LON_own"])
        assert (gap >= 20).all(), row


def test_speed_anomalies_exceed_the_type_maximum(day):
    result, ais, _, _, _ = day
    limits = pd.read_csv(Path("tasks/data/vessel_type_max_speed.csv"))
    anomalies = _truth(result, "speed_anomalies")
    assert len(anomalies) >= 1
    for row in anomalies.itertuples():
        code = int(row.vessel_type_code)
        limit = limits[(limits["type_from"] <= code) & (limits["type_to"] >= code)]["max_sog_kn"].iloc[0]
        rows = ais[(ais["MMSI"] == row.mmsi) & ais["ts"].between(row.start, row.end)]
        assert (rows["VesselType"] == code).all()
        assert (rows["SOG"] > limit).all() and rows["SOG"].max() == float(row.max_sog_kn) < 102.3
        # the reports just outside the episode are plausible again
        outside = ais[(ais["MMSI"] == row.mmsi) & ~ais["ts"].between(row.start, row.end) & (ais["SOG"] < 102.3)]
        assert (outside["SOG"] <= limit).all()


def test_jumps_are_single_reports_far_off_track(day):
    result, ais, _, _, _ = day
    jumps = _truth(result, "jumps")
    assert len(jumps) >= 1
    for row in jumps.itertuples():
        rows = ais[(ais["MMSI"] == row.mmsi) & (ais["LAT"] <= 90)].drop_duplicates(["ts"]).sort_values("ts").reset_index()
        k = int(np.flatnonzero(rows["ts"] == row.ts)[0])
        before, spike, after = rows.iloc[k - 1], rows.iloc[k], rows.iloc[k + 1]
        assert _distance_nm(before.LAT, before.LON, spike.LAT, spike.LON) >= 29
        assert _distance_nm(spike.LAT, spike.LON, after.LAT, after.LON) >= 29
        assert _distance_nm(before.LAT, before.LON, after.LAT, after.LON) < 2


def test_loitering_follows_the_definition_on_the_reports(day):
    result, ais, _, _, _ = day
    loiters = _truth(result, "loitering")
    assert len(loiters) >= 1
    ports = load_ports()
    for row in loiters.itertuples():
        rows = _own_reports(ais, row.mmsi)
        inside = rows[rows["ts"].between(row.start, row.end)]
        assert row.end - row.start >= pd.Timedelta(minutes=60)
        assert inside["SOG"].le(3.0).all()
        assert _distance_nm(inside["LAT"], inside["LON"], float(row.center_lat), float(row.center_lon)).max() <= 1.0
        assert inside["LAT"].mean() == pytest.approx(float(row.center_lat), abs=1e-5)
        far = _distance_nm(inside["LAT"].to_numpy()[:, None], inside["LON"].to_numpy()[:, None], ports["lat"].to_numpy(), ports["lon"].to_numpy())
        assert far.min() > 3.0
        # maximal: the reports just before and after are fast (or missing SOG)
        edges = pd.concat([rows[rows["ts"] < row.start].tail(1), rows[rows["ts"] > row.end].head(1)])
        assert (edges["SOG"] > 3.0).all()


def test_port_stays_split_calls_into_anchorage_and_berth(day):
    result, ais, calls, _, _ = day
    stays = _truth(result, "port_stays")
    ports = load_ports().set_index("locode")
    assert set(stays["kind"]) == {"anchorage", "berth"}
    for row in stays.itertuples():
        rows = ais[(ais["MMSI"] == row.mmsi) & ais["ts"].between(row.start, row.end) & (ais["LAT"] <= 90)]
        stopped = rows[rows["SOG"] <= 0.5]
        distance = _distance_nm(stopped["LAT"], stopped["LON"], ports.at[row.locode, "lat"], ports.at[row.locode, "lon"])
        assert (distance <= 1.0).all() if row.kind == "berth" else (distance > 1.0).all(), row
        assert {row.start, row.end} <= set(stopped["ts"])
        call = calls[(calls["mmsi"] == row.mmsi) & (calls["locode"] == row.locode) & (calls["arrival"] <= row.start)
                     & (calls["departure"] >= row.end)]  # fmt: skip
        assert len(call) == 1, row
    complete = stays[stays["truncated"] == "false"]
    assert len(complete) >= 20


def test_voyages_run_from_one_call_to_the_next(day):
    result, _, calls, _, _ = day
    voyages = _truth(result, "voyages")
    complete = voyages[voyages["truncated"] == "false"]
    assert len(complete) >= 20
    departures = set(zip(calls["mmsi"], calls["locode"], calls["departure"]))
    arrivals = set(zip(calls["mmsi"], calls["locode"], calls["arrival"]))
    for row in complete.itertuples():
        assert (row.mmsi, row.from_locode, row.departure) in departures, row
        assert (row.mmsi, row.to_locode, row.arrival) in arrivals, row
        between = calls[(calls["mmsi"] == row.mmsi) & (calls["arrival"] > row.departure) & (calls["arrival"] < row.arrival)]
        assert between.empty, row
    # every complete call but a vessel's last starts a voyage
    assert voyages["departure"].isna().sum() >= 1 and voyages["arrival"].isna().sum() >= 1


def test_traffic_counts_distinct_vessels_per_hour_cell_and_type(day):
    result, ais, _, _, vessels = day
    traffic = _truth(result, "traffic")
    valid = set(vessels.loc[vessels["valid_mmsi"], "mmsi"])
    text = pd.read_csv(result.csv_path, dtype=str, keep_default_na=False)
    rows = text[text["MMSI"].astype(int).isin(valid) & (text["LAT"] != "91.00000")]
    own = pd.concat([_own_reports(ais, m)[["MMSI", "BaseDateTime"]] for m in valid])
    rows = rows.merge(own.astype(str).drop_duplicates(), on=["MMSI", "BaseDateTime"])
    expected = pd.DataFrame(
        {"hour": pd.to_datetime(rows["BaseDateTime"]).dt.floor("h"),
         "cell_lat_idx": np.floor(rows["LAT"].astype(float) / 0.1).astype(int).astype(str),
         "cell_lon_idx": np.floor(rows["LON"].astype(float) / 0.1).astype(int).astype(str),
         "vessel_type_code": rows["VesselType"], "mmsi": rows["MMSI"]}
    ).groupby(["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code"])["mmsi"].nunique().astype(str)  # fmt: skip
    got = traffic.set_index(["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code"])["vessels"]
    assert got.sort_index().equals(expected.rename("vessels").sort_index())


def test_movement_windows_add_up(day):
    result, ais, _, _, _ = day
    movement = _truth(result, "movement")
    numbers = movement[["distance_nm", "minutes_underway", "minutes_moored", "minutes_anchored"]].astype(float)
    total = numbers[["minutes_underway", "minutes_moored", "minutes_anchored"]].sum(axis=1)
    assert (total <= 60).all() and (total >= 50).mean() > 0.9
    assert (numbers["minutes_moored"] > 0).any() and (numbers["minutes_anchored"] > 0).any()
    assert (movement["major_course_changes"].astype(int) > 0).any()
    for row in movement.sample(20, random_state=0).itertuples():
        rows = _own_reports(ais, row.mmsi)
        inside = rows[rows["ts"].between(row.window_start, row.window_start + pd.Timedelta(minutes=59, seconds=59))]
        assert len(inside) >= 6
        noisy = _distance_nm(inside["LAT"].to_numpy()[:-1], inside["LON"].to_numpy()[:-1], inside["LAT"].to_numpy()[1:], inside["LON"].to_numpy()[1:]).sum()
        # the noiseless path length vs haversine steps between noisy positions: GPS noise adds ~0.01 nm a step
        assert abs(noisy - float(row.distance_nm)) <= 0.05 * float(row.distance_nm) + 0.02 * len(inside), row
        span = (inside["ts"].max() - inside["ts"].min()).total_seconds() / 60
        assert float(row.minutes_underway) + float(row.minutes_moored) + float(row.minutes_anchored) == pytest.approx(span, abs=0.02)


def test_rates_of_zero_switch_the_plants_off(tmp_path):
    off = dict(encounters_per_day=0, loiters_per_day=0, identity_conflicts_per_day=0, speed_anomalies_per_day=0, position_spikes_per_day=0)
    result = simulate(SimulateConfig(vessels=10, hours=24, seed=5, **off), load_ports(), tmp_path)
    for name in ("loitering", "identity_conflicts", "speed_anomalies", "jumps"):
        assert _truth(result, name).empty, name
    assert (_truth(result, "encounters")["planted"] == "false").all()
    on = simulate(SimulateConfig(vessels=10, hours=24, seed=5), load_ports(), tmp_path / "on")
    for name in ("loitering", "identity_conflicts", "speed_anomalies", "jumps"):
        assert not _truth(on, name).empty, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_default_day_plants_each_colreg_type_whatever_the_seed(tmp_path, seed):
    result = simulate(SimulateConfig(seed=seed), load_ports(), tmp_path)
    encounters = _truth(result, "encounters")
    assert set(encounters.loc[encounters["planted"] == "true", "situation"]) == {"head_on", "crossing", "overtaking"}


def test_too_short_loiter_range_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="loiter_minutes"):
        simulate(SimulateConfig(vessels=2, hours=1, loiter_minutes=(30, 90)), load_ports(), tmp_path)
