"""Deterministic AIS simulator: the project's default data source.

`simulate` plans voyages for a fleet (moored stays, anchorage waits, port-to-port legs, short
round trips for tugs, fishing and pleasure craft), samples AIS position reports from them, plants
AIS gaps, close encounters of each COLREG type, loitering, identity conflicts (a twin transmitter),
speed glitches, position spikes and the dirty values real NOAA feeds carry, and writes into out_dir:

- ais.csv                    NOAA MarineCadastre CSV (17 columns), sorted by BaseDateTime, MMSI
- vessels.csv                mmsi,name,vessel_type,vessel_type_code,transceiver_class,length,width,
                             draft,home_port,valid_mmsi
- ground_truth_<name>.csv    what each detector in sql/ must find (SimulationResult.truth_paths;
                             columns in the *_COLUMNS constants below): port_calls, port_stays,
                             voyages, gaps, loitering, speed_anomalies, identity_conflicts, jumps,
                             encounters (every approach meeting the definition, planted or not;
                             `borderline` rows sit within the noise band of its limits and are
                             scored as don't-care), traffic, movement

Same SimulateConfig and port table, same bytes (numpy default_rng(cfg.seed) is the only source of
randomness). Legs are straight great-circle lines between harbour points, so they can cross land;
anchorages and offshore turning points are placed by bearing only, so a few lie on land too.
"""

from __future__ import annotations

import bisect
import functools
import os
import threading
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import SimulateConfig
from tasks.errors import ConfigError, InputError
from tasks.geo import EARTH_RADIUS_NM, bearing_deg, destination, distance_nm, great_circle_points
from tasks.ports import check_ports
from tasks.sources.raw import NOAA_COLUMNS

PORT_CALL_COLUMNS = ("mmsi", "locode", "port_name", "arrival", "departure", "anchored_minutes", "truncated")
GAP_COLUMNS = ("mmsi", "gap_start", "gap_end", "minutes")
VESSEL_COLUMNS = (
    "mmsi", "name", "vessel_type", "vessel_type_code", "transceiver_class", "length", "width", "draft",
    "home_port", "valid_mmsi",
)  # fmt: skip
PORT_STAY_COLUMNS = ("mmsi", "locode", "kind", "start", "end", "truncated")
VOYAGE_COLUMNS = ("mmsi", "from_locode", "to_locode", "departure", "arrival", "truncated")
LOITERING_COLUMNS = ("mmsi", "start", "end", "center_lat", "center_lon")
SPEED_ANOMALY_COLUMNS = ("mmsi", "vessel_type_code", "start", "end", "max_sog_kn")
IDENTITY_CONFLICT_COLUMNS = ("mmsi", "start", "end", "lat_a", "lon_a", "lat_b", "lon_b")
JUMP_COLUMNS = ("mmsi", "ts")
ENCOUNTER_COLUMNS = ("mmsi_a", "mmsi_b", "situation", "cpa_time", "cpa_nm", "planted", "borderline", "situation_borderline")
TRAFFIC_COLUMNS = ("hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code", "vessels")
MOVEMENT_COLUMNS = (
    "mmsi", "window_start", "distance_nm", "minutes_underway", "minutes_moored", "minutes_anchored", "major_course_changes",
)  # fmt: skip
TRUTH_NAMES = (
    "port_stays", "voyages", "loitering", "speed_anomalies", "identity_conflicts", "jumps", "encounters", "traffic", "movement",
)  # fmt: skip

METERS_PER_DEGREE_LAT = 111_320.0

# Real transponders report every 2-10 s underway (class A) and every 3 min when stopped or on
# class B. Underway class A reports are thinned to one per 120 s so a simulated day stays small.
REPORT_INTERVAL_UNDERWAY_A_S = 120
REPORT_INTERVAL_STOPPED_A_S = 180
REPORT_INTERVAL_CLASS_B_S = 180
REPORT_JITTER_S = 10  # a report lands 0-9 whole seconds after its nominal slot

GPS_NOISE_M = 10.0  # one standard deviation, each axis
SOG_NOISE_KN = 0.2  # uniform +-, underway only
COG_NOISE_DEG = 2.0  # uniform +-, underway only
HEADING_NOISE_DEG = 1.5  # standard deviation around the true course / berth heading
HEADING_MISSING_CLASS_A_SHARE = 0.2  # class A vessels whose gyro is not connected (Heading 511)

# AIS "not available" codes, as NOAA writes them.
SOG_NOT_AVAILABLE = 102.3
COG_NOT_AVAILABLE = 360.0
HEADING_NOT_AVAILABLE = 511
LAT_NOT_AVAILABLE = 91.0
LON_NOT_AVAILABLE = 181.0
NOT_AVAILABLE_POSITION_ROWS = 5

# Navigational status codes (ITU-R M.1371); class B rows leave Status empty.
STATUS_UNDER_WAY = 0
STATUS_AT_ANCHOR = 1
STATUS_MOORED = 5
STATUS_FISHING = 7

# Harbour geometry in nautical miles. Port-call detection uses a 3 nm radius, so every berth and
# anchorage point keeps OTHER_PORT_CLEARANCE_NM from every other port: a stop is near one port only.
BERTH_OFFSET_NM = (0.2, 0.8)
ANCHORAGE_OFFSET_NM = (1.5, 2.5)
OTHER_PORT_CLEARANCE_NM = 3.5
BERTHS_PER_PORT = 6
ANCHORAGES_PER_PORT = 3
OFFSHORE_TURN_NM = (5.0, 25.0)
NEXT_PORT_MIN_NM = 20.0  # next-port weight is 1 / max(distance, this), same region only

STAY_HOURS = (1.0, 5.0)
ANCHOR_WAIT_MINUTES = (45.0, 150.0)
SHIFT_SPEED_KN = (5.0, 8.0)  # anchorage to berth, inside the port's 3 nm
TRAWL_SPEED_KN = (2.5, 4.0)  # reported SOG stays >= 2.3: clearly underway for the encounter rule
TRAWL_HOURS = (1.0, 3.0)
PRE_ROLL_HOURS = 36.0  # voyages start up to this long before cfg.start, so vessels enter mid-voyage
GAP_MARGIN_S = 600  # a gap starts and ends at least this far inside an underway spell
GAP_PLACEMENT_TRIES = 20

# Row origins: ROW_TWIN rows come from a twin transmitter, ROW_SPIKE rows sit far off track; staging
# flags both (impossible_jump), so the facts' truth is computed from ROW_NORMAL rows.
ROW_NORMAL, ROW_TWIN, ROW_SPIKE = range(3)

# The facts contract (issue 4) at FactsConfig's defaults: the truth files follow these definitions.
PORT_RADIUS_NM = 3.0
BERTH_RADIUS_NM = 1.0  # anchorage (1.5-2.5 nm out) vs berth (0.2-0.8 nm) within a call
GAP_THRESHOLD_MINUTES = 30.0
MIN_CALL_MINUTES = 30.0  # shorter stops are no call: a call cut by the data's edge may show less
LOITER_MAX_SOG_KN = 3.0
LOITER_MIN_MINUTES = 60.0
LOITER_RADIUS_NM = 1.0
ENCOUNTER_MIN_SOG_KN = 2.0
ENCOUNTER_BUCKET_MINUTES = 10
ENCOUNTER_CPA_NM = 0.5
ENCOUNTER_TCPA_MINUTES = 20.0
TRAFFIC_CELL_DEG = 0.1
MOVEMENT_WINDOW_MINUTES = 60
MOVEMENT_MIN_POSITIONS = 6
MAJOR_TURN_DEG = 45.0
MAX_SPEED_PATH = Path(__file__).parent / "data" / "vessel_type_max_speed.csv"

# Planted episodes. Every one lies inside the span, PLANT_EDGE_S from its edges, and (except twins)
# PLANT_PORT_CLEARANCE_NM from every port: port radius 3 nm + drift / approach room.
PLANT_EDGE_S = 900
PLANT_PORT_CLEARANCE_NM = 8.0
BUSY_MARGIN_S = 1800  # planted episodes of one vessel keep this far apart in time
NEIGHBOUR_MAX_S = 400  # longest normal silence between two reports (2 intervals + jitter)
LOITER_SPEED_KN = (0.8, 1.6)  # reported SOG 0.6-1.8: not stopped (> 0.5), not underway for encounters (< 2)
LOITER_WANDER_NM = (0.1, 0.4)  # drift waypoints around the stop point: reports stay < 1 nm from their mean
SITUATIONS = ("head_on", "crossing", "overtaking")
ENCOUNTER_MISS_NM = {"head_on": (0.05, 0.3), "crossing": (0.05, 0.3), "overtaking": (0.05, 0.25)}
ENCOUNTER_LEAD_MINUTES = (30, 46)  # straight run of both vessels before the CPA (the 20 min TCPA horizon + margin)
ENCOUNTER_RUN_OUT_MINUTES = (10, 31)
ENCOUNTER_REROUTE_S = 6 * 3600  # the partner's reroute starts at most this long before its straight run
ENCOUNTER_TRIES = 60
ENCOUNTER_REACH_NM = 200.0  # partners are sought among vessels this close (as first planned) mid-reroute window
OVERTAKE_MIN_SPEED_DIFF_KN = 4.0
NM_PER_DEGREE = np.radians(1.0) * EARTH_RADIUS_NM  # the facts' flat projection (sql/macros_geo.sql)
METERS_PER_NM = 1852.0
# Encounter truth's borderline band. The detector sees the reported values, so a pair the definition
# flags by less than their noise (GPS_NOISE_M per axis, SOG +-SOG_NOISE_KN, COG +-COG_NOISE_DEG, uniform:
# standard deviation = half-width / sqrt(3)) is a coin toss for it. The band is NOISE_SIGMAS standard
# deviations of the error of the predicted CPA (pair position error + velocity error x (lead + TCPA)),
# of the TCPA (that error over the relative speed) and of the COLREG inputs; about 5 % of the noise
# falls outside 2 sigma. A 12-knot pair 10 min from its CPA gets a CPA band of about +-0.07 nm.
NOISE_SIGMAS = 2.0
# A stop shows in the reports only at the first report after it (stopped class A / class B every 180 s
# + jitter): a CPA up to that long after a vessel stopped can still be predicted from its reports.
STOP_BAND_S = REPORT_INTERVAL_STOPPED_A_S + REPORT_JITTER_S
KEY_SPAN_S, KEY_OFFSET_S = 10**9, 10**8  # (vessel, time) lookup key: vessel * span + time + offset
TWIN_DISTANCE_NM = (30.0, 60.0)
TWIN_MIN_SEPARATION_NM = 20.0
TWIN_SPEED_KN = (8.0, 14.0)
TWIN_INTERVAL_S, TWIN_JITTER_S = 600, 30  # >= 3 own report intervals (<= 190 s) between twin reports
SPIKE_OFFSET_NM = (30.0, 60.0)
GLITCH_REPORTS = (2, 4)
GLITCH_FACTOR = (1.5, 3.0)
GLITCH_SOG_CEILING_KN = 102.0  # 102.3 means "not available"

MOORED, ANCHORED, SHIFT, LEG, TRAWL, LOITER = range(6)
STOPPED_PHASES = (MOORED, ANCHORED)
MOVING_PHASES = (SHIFT, LEG, TRAWL, LOITER)
UNDERWAY_SPELL_PHASES = (LEG, TRAWL)  # SHIFT belongs to a port call and never hosts a gap


@dataclass(frozen=True)
class SimulationResult:
    csv_path: Path
    port_calls_path: Path
    gaps_path: Path
    vessels_path: Path
    rows: int  # data rows in ais.csv, duplicates included
    vessels: int  # vessels in vessels.csv, invalid-MMSI ones included
    truth_paths: dict[str, Path] = field(default_factory=dict)  # truth name (e.g. "encounters") -> ground_truth_<name>.csv


@dataclass(frozen=True)
class VesselKind:
    name: str
    type_codes: tuple[int, ...]
    speed_kn: tuple[float, float]
    class_b_share: float
    anchor_share: float
    short_range: bool
    length_m: tuple[int, int]
    width_m: tuple[int, int]
    draft_m: tuple[float, float]
    name_words: tuple[tuple[str, ...], tuple[str, ...]]


KINDS = (
    VesselKind(
        "cargo", (70, 70, 70, 71, 72, 74, 79), (12.0, 18.0), 0.0, 0.4, False, (140, 300), (22, 48), (8.0, 14.5),
        (("PACIFIC", "ATLANTIC", "GULF", "OCEAN", "GLOBAL", "NORTHERN", "HORIZON", "LIBERTY", "MAERSK", "PRESIDENT"),
         ("TRADER", "STAR", "EXPRESS", "PIONEER", "VOYAGER", "ENDEAVOUR", "PRIDE", "GRACE", "CARRIER", "NAVIGATOR")),
    ),
    VesselKind(
        "tanker", (80, 80, 81, 82, 83, 84, 89), (10.0, 15.0), 0.0, 0.4, False, (120, 250), (20, 44), (7.0, 15.0),
        (("OVERSEAS", "AMERICAN", "SEA", "GULF", "ALASKA", "CHEMICAL", "STENA", "NORDIC", "BLUE", "EAGLE"),
         ("PROGRESS", "ANACORTES", "SPIRIT", "FRONTIER", "VENTURE", "LEGEND", "CHALLENGER", "INTEGRITY", "DISCOVERY", "TRADER")),
    ),
    VesselKind(
        "passenger", (60, 60, 60, 69), (15.0, 22.0), 0.0, 0.05, False, (30, 120), (9, 25), (2.0, 6.0),
        (("ISLAND", "BAY", "HARBOR", "CITY", "GOLDEN", "STATEN", "CATALINA", "PUGET", "CAPE", "SOUND"),
         ("EXPRESS", "QUEEN", "PRINCESS", "FLYER", "CLIPPER", "RUNNER", "STAR", "SPIRIT", "JET", "MONARCH")),
    ),
    VesselKind(
        "fishing", (30,), (6.0, 10.0), 0.7, 0.0, True, (15, 40), (5, 10), (2.0, 5.0),
        (("MISS", "LADY", "CAPT", "OCEAN", "SEA", "NORTHERN", "BLUE", "LUCKY", "SILVER", "MORNING"),
         ("ANNA", "MARIE", "HUNTER", "HARVEST", "DAWN", "KATHLEEN", "PROVIDER", "QUEST", "STAR", "JOY")),
    ),
    VesselKind(
        "tug", (31, 52), (6.0, 10.0), 0.0, 0.0, True, (20, 40), (8, 13), (3.0, 5.5),
        (("BROTHER", "CAPT", "MISS", "SEA", "HARBOR", "ATLANTIC", "PACIFIC", "GULF", "CROWLEY", "MORAN"),
         ("WILSON", "JACK", "EAGLE", "TITAN", "HERCULES", "SAMSON", "RANGER", "BULL", "GUARDIAN", "POWER")),
    ),
    VesselKind(
        "pleasure", (37,), (5.0, 20.0), 1.0, 0.0, True, (8, 25), (3, 7), (1.0, 2.5),
        (("FREE", "SEA", "WIND", "BLUE", "SALTY", "REEL", "KNOT", "SUMMER", "LAZY", "ISLAND"),
         ("SPIRIT", "DANCER", "BYRD", "BREEZE", "DREAM", "ESCAPE", "TIME", "DAYS", "HOPE", "GYPSY")),
    ),
)  # fmt: skip
KIND_SHARES = (0.25, 0.15, 0.12, 0.18, 0.15, 0.15)
US_MIDS = (338, 366, 367, 368, 369)
INVALID_MMSI_EXAMPLES = (12345678, 999999999, 111222333)


@dataclass(frozen=True)
class Vessel:
    mmsi: int
    name: str
    kind: VesselKind
    type_code: int
    class_b: bool
    heading_missing: bool
    imo: str
    call_sign: str
    length: int
    width: int | None
    draft: float | None
    home: int  # port index
    valid_mmsi: bool


@dataclass(frozen=True)
class Harbour:
    """Port table plus the berth and anchorage points the simulator moors vessels at."""

    ports: pd.DataFrame
    lat: np.ndarray
    lon: np.ndarray
    berths: np.ndarray  # (port, k, lat/lon)
    berth_headings: np.ndarray  # (port, k) degrees
    anchorages: np.ndarray  # (port, k, lat/lon)
    next_port_weights: np.ndarray  # (from, to), rows sum to 1; zero rows: no port to sail to

    def berth(self, port: int, rng: np.random.Generator) -> tuple[tuple[float, float], float]:
        k = int(rng.integers(BERTHS_PER_PORT))
        return (float(self.berths[port, k, 0]), float(self.berths[port, k, 1])), float(self.berth_headings[port, k])

    def anchorage(self, port: int, rng: np.random.Generator) -> tuple[float, float]:
        k = int(rng.integers(ANCHORAGES_PER_PORT))
        return float(self.anchorages[port, k, 0]), float(self.anchorages[port, k, 1])

    def next_port(self, port: int, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.lat), p=self.next_port_weights[port]))


# --- harbour and fleet ----------------------------------------------------------------------


def _points_clear_of_other_ports(
    ports: pd.DataFrame, port: int, count: int, offset_nm: tuple[float, float], what: str, rng: np.random.Generator
) -> list[tuple[float, float]]:
    lat, lon = ports["lat"].to_numpy(), ports["lon"].to_numpy()
    others = np.arange(len(ports)) != port
    points: list[tuple[float, float]] = []
    for _ in range(400):
        point = destination(lat[port], lon[port], rng.uniform(0, 360), rng.uniform(*offset_nm))
        if not others.any() or distance_nm(point[0], point[1], lat[others], lon[others]).min() >= OTHER_PORT_CLEARANCE_NM:
            points.append(point)
            if len(points) == count:
                return points
    gaps = distance_nm(lat[port], lon[port], lat, lon)
    gaps[port] = np.inf
    nearest = int(gaps.argmin())
    raise InputError(
        f"ports {ports.at[port, 'locode']} and {ports.at[nearest, 'locode']} are only {gaps[nearest]:.1f} nm apart: "
        f"the simulator cannot place a {what} within {offset_nm[1]:g} nm of one and {OTHER_PORT_CLEARANCE_NM:g} nm "
        "from the other; drop one of them from the port table"
    )


def build_harbour(ports: pd.DataFrame, rng: np.random.Generator) -> Harbour:
    lat, lon = ports["lat"].to_numpy(float), ports["lon"].to_numpy(float)
    berths, headings, anchorages = [], [], []
    for port in range(len(ports)):
        berths.append(_points_clear_of_other_ports(ports, port, BERTHS_PER_PORT, BERTH_OFFSET_NM, "berth", rng))
        headings.append(rng.uniform(0, 360, BERTHS_PER_PORT))
        anchorages.append(
            _points_clear_of_other_ports(ports, port, ANCHORAGES_PER_PORT, ANCHORAGE_OFFSET_NM, "anchorage", rng)
        )
    region = ports["region"].to_numpy(str) if "region" in ports.columns else np.full(len(ports), "all")
    dist = distance_nm(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    weights = np.where(region[:, None] == region[None, :], 1.0 / np.maximum(dist, NEXT_PORT_MIN_NM), 0.0)
    np.fill_diagonal(weights, 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    return Harbour(ports, lat, lon, np.array(berths), np.array(headings), np.array(anchorages), weights)


def _imo_number(rng: np.random.Generator, first_digit: int) -> str:
    digits = [first_digit, *rng.integers(0, 10, 5).tolist()]
    check = sum(d * w for d, w in zip(digits, range(7, 1, -1))) % 10
    return "IMO" + "".join(map(str, digits)) + str(check)


def _call_sign(rng: np.random.Generator, class_b: bool) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if class_b and rng.random() < 0.5:
        return ""
    if not class_b and rng.random() < 0.3:
        return "K" + "".join(rng.choice(list(letters), 3))
    return "W" + "".join(rng.choice(list(letters), 2)) + "".join(map(str, rng.integers(0, 10, 4)))


def _invalid_mmsi(index: int, rng: np.random.Generator) -> int:
    if index < len(INVALID_MMSI_EXAMPLES):
        return INVALID_MMSI_EXAMPLES[index]
    if index % 2:
        return int(rng.integers(10_000_000, 100_000_000))  # 8 digits
    return int(rng.choice([1, 8, 9])) * 100_000_000 + int(rng.integers(0, 100_000_000))  # MID outside 2xx-7xx


def build_fleet(cfg: SimulateConfig, harbour: Harbour, rng: np.random.Generator) -> list[Vessel]:
    n_valid, n_total = cfg.vessels, cfg.vessels + cfg.invalid_mmsi_vessels
    kinds = list(range(len(KINDS)))[:n_valid]
    kinds += rng.choice(len(KINDS), n_total - len(kinds), p=KIND_SHARES).tolist()
    kinds[:n_valid] = rng.permutation(kinds[:n_valid]).tolist()
    travelling_ports = np.flatnonzero(harbour.next_port_weights.sum(axis=1) > 0)
    if travelling_ports.size == 0:
        raise InputError("the port table needs at least two ports in one region so ships can sail between them")
    used_mmsi: set[int] = set()
    used_names: dict[str, int] = {}
    fleet = []
    for i, kind_index in enumerate(kinds):
        kind = KINDS[kind_index]
        valid = i < n_valid
        while True:
            if valid:
                mmsi = int(rng.choice(US_MIDS)) * 1_000_000 + int(rng.integers(0, 1_000_000))
            else:
                mmsi = _invalid_mmsi(i - n_valid, rng)
            if mmsi not in used_mmsi:
                used_mmsi.add(mmsi)
                break
        class_b = bool(rng.random() < kind.class_b_share)
        base_name = f"{rng.choice(kind.name_words[0])} {rng.choice(kind.name_words[1])}"
        used_names[base_name] = used_names.get(base_name, 0) + 1
        name = base_name if used_names[base_name] == 1 else f"{base_name} {used_names[base_name]}"
        if kind.name in ("cargo", "tanker", "passenger"):
            imo = _imo_number(rng, 9)
        elif kind.name == "tug" and rng.random() < 0.5:
            imo = _imo_number(rng, int(rng.choice([7, 8, 9])))
        else:
            imo = "IMO0000000" if rng.random() < 0.5 else ""
        length = int(rng.integers(kind.length_m[0], kind.length_m[1] + 1))
        width = int(rng.integers(kind.width_m[0], kind.width_m[1] + 1))
        if class_b and rng.random() < 0.3:
            width = None
        draft = None if class_b else round(float(rng.uniform(*kind.draft_m)), 1)
        home_choices = np.arange(len(harbour.lat)) if kind.short_range else travelling_ports
        fleet.append(
            Vessel(
                mmsi=mmsi,
                name=name,
                kind=kind,
                type_code=int(rng.choice(kind.type_codes)),
                class_b=class_b,
                heading_missing=class_b or bool(rng.random() < HEADING_MISSING_CLASS_A_SHARE),
                imo=imo,
                call_sign=_call_sign(rng, class_b),
                length=length,
                width=width,
                draft=draft,
                home=int(rng.choice(home_choices)),
                valid_mmsi=valid,
            )
        )
    return fleet


# --- voyage planning ------------------------------------------------------------------------


class Itineraries:
    """Phases (moored, anchored, shift, leg, trawl) of every vessel, in time order per vessel.

    Times are whole seconds from cfg.start; a phase may start before 0 (the pre-roll).
    """

    def __init__(self) -> None:
        self.phases: list[tuple] = []
        self.call_ports: list[int] = []

    def new_call(self, port: int) -> int:
        self.call_ports.append(port)
        return len(self.call_ports) - 1

    def stay(self, vessel: int, kind: int, status: int, t: int, seconds: float, at, heading: float, call: int) -> int:
        end = t + max(60, int(round(seconds)))
        self.phases.append((vessel, kind, status, t, end, at[0], at[1], at[0], at[1], 0.0, heading, call))
        return end

    def sail(self, vessel: int, kind: int, status: int, t: int, start, end, speed_kn: float, call: int = -1) -> int:
        dist = float(distance_nm(start[0], start[1], end[0], end[1]))
        finish = t + max(60, int(round(dist / speed_kn * 3600)))
        self.phases.append((vessel, kind, status, t, finish, start[0], start[1], end[0], end[1], speed_kn, 0.0, call))
        return finish

    def table(self) -> dict[str, np.ndarray]:
        names = ("vessel", "kind", "status", "t0", "t1", "lat0", "lon0", "lat1", "lon1", "speed", "heading", "call")
        columns = list(zip(*self.phases))
        ints = {"vessel", "kind", "status", "t0", "t1", "call"}
        return {n: np.asarray(c, dtype=np.int64 if n in ints else float) for n, c in zip(names, columns)}


def _hours(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds)) * 3600.0


def _port_to_port(v: int, vessel: Vessel, harbour: Harbour, plan: Itineraries, rng, t: int, port: int, berth):
    destination_port = harbour.next_port(port, rng)
    speed = float(rng.uniform(*vessel.kind.speed_kn))
    call = plan.new_call(destination_port)
    new_berth, heading = harbour.berth(destination_port, rng)
    if rng.random() < vessel.kind.anchor_share:
        anchorage = harbour.anchorage(destination_port, rng)
        t = plan.sail(v, LEG, STATUS_UNDER_WAY, t, berth, anchorage, speed)
        wait = float(rng.uniform(*ANCHOR_WAIT_MINUTES)) * 60.0
        t = plan.stay(v, ANCHORED, STATUS_AT_ANCHOR, t, wait, anchorage, float(rng.uniform(0, 360)), call)
        t = plan.sail(v, SHIFT, STATUS_UNDER_WAY, t, anchorage, new_berth, float(rng.uniform(*SHIFT_SPEED_KN)), call)
    else:
        t = plan.sail(v, LEG, STATUS_UNDER_WAY, t, berth, new_berth, speed)
    t = plan.stay(v, MOORED, STATUS_MOORED, t, _hours(rng, STAY_HOURS), new_berth, heading, call)
    return t, destination_port, new_berth


def _round_trip(v: int, vessel: Vessel, harbour: Harbour, plan: Itineraries, rng, t: int, berth):
    home = vessel.home
    speed = float(rng.uniform(*vessel.kind.speed_kn))
    turn = destination(harbour.lat[home], harbour.lon[home], rng.uniform(0, 360), rng.uniform(*OFFSHORE_TURN_NM))
    t = plan.sail(v, LEG, STATUS_UNDER_WAY, t, berth, turn, speed)
    position = turn
    if vessel.kind.name == "fishing":
        for _ in range(int(rng.integers(1, 3))):
            trawl_speed = float(rng.uniform(*TRAWL_SPEED_KN))
            end = destination(*position, rng.uniform(0, 360), trawl_speed * _hours(rng, TRAWL_HOURS) / 3600.0)
            t = plan.sail(v, TRAWL, STATUS_FISHING, t, position, end, trawl_speed)
            position = end
    call = plan.new_call(home)
    new_berth, heading = harbour.berth(home, rng)
    t = plan.sail(v, LEG, STATUS_UNDER_WAY, t, position, new_berth, speed)
    t = plan.stay(v, MOORED, STATUS_MOORED, t, _hours(rng, STAY_HOURS), new_berth, heading, call)
    return t, new_berth


def plan_voyages(fleet: list[Vessel], harbour: Harbour, span_s: int, rng: np.random.Generator) -> Itineraries:
    """Every vessel starts moored at home some hours before cfg.start and keeps sailing past the span."""
    plan = Itineraries()
    for v, vessel in enumerate(fleet):
        t = -int(round(_hours(rng, (0.0, PRE_ROLL_HOURS))))
        port = vessel.home
        berth, heading = harbour.berth(port, rng)
        call = plan.new_call(port)
        t = plan.stay(v, MOORED, STATUS_MOORED, t, _hours(rng, STAY_HOURS), berth, heading, call)
        while t < span_s:
            if vessel.kind.short_range:
                t, berth = _round_trip(v, vessel, harbour, plan, rng, t, berth)
            else:
                t, port, berth = _port_to_port(v, vessel, harbour, plan, rng, t, port, berth)
    return plan


# --- position reports -----------------------------------------------------------------------


def sample_reports(phases: dict[str, np.ndarray], fleet: list[Vessel], span_s: int, rng) -> dict[str, np.ndarray]:
    """One row per AIS position report, vectorised over all phases; times strictly increase per vessel."""
    class_b = np.array([v.class_b for v in fleet])[phases["vessel"]]
    stopped = np.isin(phases["kind"], STOPPED_PHASES)
    interval = np.where(
        class_b, REPORT_INTERVAL_CLASS_B_S, np.where(stopped, REPORT_INTERVAL_STOPPED_A_S, REPORT_INTERVAL_UNDERWAY_A_S)
    )
    t0, t1 = phases["t0"], phases["t1"]
    first = t0 + -(-np.maximum(-t0, 0) // interval) * interval  # first slot at or after 0
    last_allowed = t1 - REPORT_JITTER_S  # slot + jitter stays before the phase ends
    counts = np.where(first <= last_allowed, (last_allowed - first) // interval + 1, 0)
    phase = np.repeat(np.arange(len(t0)), counts)
    step = np.arange(phase.size) - np.repeat(np.cumsum(counts) - counts, counts)
    t = first[phase] + step * interval[phase] + rng.integers(0, REPORT_JITTER_S, phase.size)
    inside = t < span_s
    phase, t = phase[inside], t[inside]

    fraction = (t - t0[phase]) / (t1[phase] - t0[phase])
    lat0, lon0, lat1, lon1 = (phases[k][phase] for k in ("lat0", "lon0", "lat1", "lon1"))
    lat, lon = great_circle_points(lat0, lon0, lat1, lon1, fraction)
    course = bearing_deg(lat, lon, lat1, lon1)
    true_lat, true_lon = lat, lon
    lat = lat + rng.normal(0, GPS_NOISE_M, t.size) / METERS_PER_DEGREE_LAT
    lon = lon + rng.normal(0, GPS_NOISE_M, t.size) / (METERS_PER_DEGREE_LAT * np.cos(np.radians(lat)))

    kind = phases["kind"][phase]
    row_stopped = np.isin(kind, STOPPED_PHASES)
    sog_cap = np.where(kind == ANCHORED, 0.3, 0.2)
    sog = np.where(
        row_stopped,
        rng.uniform(0, 1, t.size) * sog_cap,
        phases["speed"][phase] + rng.uniform(-SOG_NOISE_KN, SOG_NOISE_KN, t.size),
    )
    cog = np.where(row_stopped, rng.uniform(0, 360, t.size), course + rng.uniform(-COG_NOISE_DEG, COG_NOISE_DEG, t.size))
    true_heading = np.where(row_stopped, phases["heading"][phase], course)
    heading = np.rint(true_heading + rng.normal(0, HEADING_NOISE_DEG, t.size)).astype(np.int64) % 360
    vessel = phases["vessel"][phase]
    heading_missing = np.array([v.heading_missing for v in fleet])[vessel]
    return {
        "vessel": vessel,
        "phase": phase,
        "t": t,
        "lat": lat,
        "lon": lon,
        "sog": np.round(np.clip(sog, 0.0, None), 1),
        "cog": np.round(cog % 360.0, 1) % 360.0,
        "heading": np.where(heading_missing, HEADING_NOT_AVAILABLE, heading),
        "status": phases["status"][phase],
        # not written: the noiseless truth behind each report, and what the row is (ROW_NORMAL/TWIN/SPIKE)
        "true_lat": true_lat,
        "true_lon": true_lon,
        "course": course,
        "origin": np.full(t.size, ROW_NORMAL, dtype=np.int64),
    }


def _take(rows: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in rows.items()}


def plant_gaps(
    rows, phases, harbour: Harbour, cfg: SimulateConfig, span_s: int, rng, busy: list[list[tuple[int, int]]] | None = None
) -> tuple[dict, list[tuple[int, int, int]]]:
    """Take `gap_vessel_share` of valid vessels dark once inside an underway spell; returns kept rows and gaps.

    The reports bounding a gap lie over OTHER_PORT_CLEARANCE_NM from every port, so a gap never
    hides a vessel leaving or entering a port's 3 nm (two calls would read as one). A gap keeps
    clear of the vessel's `busy` intervals (planted encounters and loiters), so it hides none.
    """
    wanted = int(round(cfg.gap_vessel_share * cfg.vessels))
    drop = np.zeros(rows["t"].size, dtype=bool)
    gaps: list[tuple[int, int, int]] = []
    underway = np.isin(phases["kind"], UNDERWAY_SPELL_PHASES)
    for v in rng.permutation(cfg.vessels).tolist():
        if len(gaps) == wanted:
            break
        dark_s = int(round(float(rng.uniform(*cfg.gap_minutes)) * 60))
        spells = _underway_spells(phases, underway, v, span_s)
        fits = [(s, e) for s, e in spells if e - s >= dark_s + 2 * GAP_MARGIN_S]
        if not fits:
            continue
        mine = np.flatnonzero(rows["vessel"] == v)  # rows of one vessel are in time order
        times = rows["t"][mine]
        for _ in range(GAP_PLACEMENT_TRIES):
            start, end = fits[int(rng.integers(len(fits)))]
            dark_from = int(rng.integers(start + GAP_MARGIN_S, end - GAP_MARGIN_S - dark_s + 1))
            if busy is not None and _overlaps(busy[v], dark_from - GAP_MARGIN_S, dark_from + dark_s + GAP_MARGIN_S):
                continue
            before = mine[times <= dark_from][-1]
            after = mine[times >= dark_from + dark_s][0]
            bounds = np.array([before, after])
            if _clear_of_ports(rows["lat"][bounds], rows["lon"][bounds], harbour):
                drop[mine[(times > dark_from) & (times < dark_from + dark_s)]] = True
                gaps.append((v, int(rows["t"][before]), int(rows["t"][after])))
                break
    return _take(rows, ~drop), gaps


def _clear_of_ports(lat: np.ndarray, lon: np.ndarray, harbour: Harbour) -> bool:
    dist = distance_nm(lat[:, None], lon[:, None], harbour.lat[None, :], harbour.lon[None, :])
    return bool((dist > OTHER_PORT_CLEARANCE_NM).all())


def _underway_spells(phases, underway: np.ndarray, v: int, span_s: int) -> list[tuple[int, int]]:
    spells: list[tuple[int, int]] = []
    for i in np.flatnonzero((phases["vessel"] == v) & underway).tolist():
        s, e = max(int(phases["t0"][i]), 0), min(int(phases["t1"][i]), span_s)
        if e <= s:
            continue
        if spells and spells[-1][1] == int(phases["t0"][i]):
            spells[-1] = (spells[-1][0], e)
        else:
            spells.append((s, e))
    return spells


def port_call_truth(rows, phases, calls_port: np.ndarray, fleet: list[Vessel], span_s: int) -> pd.DataFrame:
    """Calls as the reports show them: arrival/departure = first/last stopped report of the call.

    A call is `truncated` when it was in progress at the start or end of the span, or when no
    report of the vessel precedes its arrival or follows its departure (the data cannot show it
    whole). Calls without a stopped report inside the span are left out.
    """
    valid = np.array([v.valid_mmsi for v in fleet])
    kind = phases["kind"][rows["phase"]]
    frame = pd.DataFrame({"vessel": rows["vessel"], "t": rows["t"], "call": phases["call"][rows["phase"]]})
    frame["stopped_t"] = np.where(np.isin(kind, STOPPED_PHASES), frame["t"], np.nan)
    frame["anchored_t"] = np.where(kind == ANCHORED, frame["t"], np.nan)
    seen = frame.groupby("vessel")["t"].agg(["min", "max"])
    in_call = frame[(frame["call"] >= 0) & valid[frame["vessel"].to_numpy()] & frame["stopped_t"].notna()]
    calls = in_call.groupby("call").agg(
        vessel=("vessel", "first"),
        arrival=("stopped_t", "min"),
        departure=("stopped_t", "max"),
        anchored_first=("anchored_t", "min"),
        anchored_last=("anchored_t", "max"),
    )
    call_phases = pd.DataFrame({"call": phases["call"], "t0": phases["t0"], "t1": phases["t1"]})
    extent = call_phases[call_phases["call"] >= 0].groupby("call").agg(begin=("t0", "min"), end=("t1", "max"))
    extent = extent.loc[calls.index]
    vessel = calls["vessel"].to_numpy()
    # cut_start / cut_end: the data cannot show the call's arrival / its departure
    cut_start = (extent["begin"].to_numpy() < 0) | (calls["arrival"].to_numpy() == seen.loc[vessel, "min"].to_numpy())
    cut_end = (extent["end"].to_numpy() > span_s) | (calls["departure"].to_numpy() == seen.loc[vessel, "max"].to_numpy())
    anchored = (calls["anchored_last"] - calls["anchored_first"]).fillna(0.0) / 60.0
    return pd.DataFrame(
        {
            "vessel": vessel,
            "port": calls_port[calls.index.to_numpy()],
            "arrival": calls["arrival"].to_numpy().astype(np.int64),
            "departure": calls["departure"].to_numpy().astype(np.int64),
            "anchored_minutes": anchored.to_numpy(),
            "truncated": cut_start | cut_end,
            "call": calls.index.to_numpy().astype(np.int64),
            "cut_start": cut_start,
            "cut_end": cut_end,
        }
    )


def _ground_truth_reports(rows, calls: pd.DataFrame, gaps: list[tuple[int, int, int]]) -> np.ndarray:
    """Mask of the reports a ground-truth timestamp points at (call arrival/departure, gap bounds)."""
    gap_vessels = np.array([g[0] for g in gaps], dtype=np.int64)
    vessel = np.concatenate([calls["vessel"], calls["vessel"], gap_vessels, gap_vessels]).astype(np.int64)
    t = np.concatenate(
        [calls["arrival"], calls["departure"], [g[1] for g in gaps], [g[2] for g in gaps]]
    ).astype(np.int64)
    wanted = pd.MultiIndex.from_arrays([vessel, t])
    return pd.MultiIndex.from_arrays([rows["vessel"], rows["t"]]).isin(wanted)


def soil_rows(rows, protected: np.ndarray, cfg: SimulateConfig, rng) -> tuple[dict, np.ndarray]:
    """Not-available codes and duplicates as real feeds carry them; returns rows and copies per row.

    Arrival/departure reports of port calls and the reports bounding a gap are left clean, so the
    ground truth reads the same before and after a cleaner drops not-available values.
    """
    n = rows["t"].size
    eligible = np.flatnonzero(~protected)
    dirty = rng.choice(eligible, min(eligible.size, int(round(cfg.dirty_row_share * n))), replace=False)
    sog_code = rng.random(dirty.size) < 0.5
    rows["sog"][dirty[sog_code]] = SOG_NOT_AVAILABLE
    rows["cog"][dirty[~sog_code]] = COG_NOT_AVAILABLE
    no_position = rng.choice(eligible, min(eligible.size, NOT_AVAILABLE_POSITION_ROWS), replace=False)
    rows["lat"][no_position] = LAT_NOT_AVAILABLE
    rows["lon"][no_position] = LON_NOT_AVAILABLE
    copies = np.ones(n, dtype=np.int64)
    copies[rng.choice(n, min(n, int(round(cfg.duplicate_row_share * n))), replace=False)] = 2
    return rows, copies


# --- planted episodes: loitering and close encounters (phase level) ---------------------------

P_VESSEL, P_KIND, P_STATUS, P_T0, P_T1, P_LAT0, P_LON0, P_LAT1, P_LON1, P_SPEED, P_HEADING, P_CALL = range(12)


def _planned(rate: float, cfg: SimulateConfig) -> int:
    """How many episodes a per-day-per-30-vessels rate asks for; a rate > 0 gives >= 1 in a day or more."""
    if rate <= 0:
        return 0
    count = int(round(rate * cfg.hours / 24.0 * cfg.vessels / 30.0))
    return max(count, 1) if cfg.hours >= 24 else count


def _overlaps(intervals: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in intervals)


def _point(phase: tuple, t: float) -> tuple[float, float]:
    fraction = np.array([(t - phase[P_T0]) / (phase[P_T1] - phase[P_T0])])
    lat, lon = great_circle_points(
        np.array([phase[P_LAT0]]), np.array([phase[P_LON0]]), np.array([phase[P_LAT1]]), np.array([phase[P_LON1]]), fraction
    )
    return float(lat[0]), float(lon[0])


def _clear_of_all_ports(point: tuple[float, float], harbour: Harbour, clearance_nm: float) -> bool:
    return bool(distance_nm(point[0], point[1], harbour.lat, harbour.lon).min() >= clearance_nm)


class EditablePlan:
    """Phases per vessel in time order, so planted episodes can pause or reroute a vessel.

    An edit at time t replaces the vessel's track from t on and shifts its later phases, so edits
    only go where the vessel is not yet `frozen` (a planted episode's track is final up to there).
    `busy` holds each vessel's planted intervals (seconds), which gaps and other plants keep clear of.
    """

    def __init__(self, plan: Itineraries, vessels: int) -> None:
        self.call_ports = plan.call_ports
        self.by_vessel: list[list[tuple]] = [[] for _ in range(vessels)]
        for phase in plan.phases:
            self.by_vessel[phase[P_VESSEL]].append(phase)
        self.frozen = np.full(vessels, -(10**12), dtype=np.int64)
        self.busy: list[list[tuple[int, int]]] = [[] for _ in range(vessels)]
        self._start_cache: dict[int, list[int]] = {}

    def _starts(self, v: int) -> list[int]:
        if v not in self._start_cache:
            self._start_cache[v] = [p[P_T0] for p in self.by_vessel[v]]
        return self._start_cache[v]

    def phase_at(self, v: int, t: float) -> int:
        i = bisect.bisect_right(self._starts(v), t) - 1
        return i if i >= 0 and t < self.by_vessel[v][i][P_T1] else -1

    def phases_between(self, v: int, t_from: float, t_to: float) -> range:
        """Indices of the vessel's phases that overlap [t_from, t_to)."""
        starts = self._starts(v)
        return range(max(bisect.bisect_right(starts, t_from) - 1, 0), bisect.bisect_left(starts, t_to))

    def replace_from(self, v: int, i: int, t: int, at: tuple[float, float], new: list[tuple], shift: int) -> None:
        """Cut phase i at t (where the vessel is `at`), insert `new`, shift the rest by `shift` seconds."""
        phases = self.by_vessel[v]
        head = phases[i][:P_T1] + (t,) + phases[i][P_LAT0 : P_LAT1] + at + phases[i][P_SPEED:]
        tail = [p[:P_T0] + (p[P_T0] + shift, p[P_T1] + shift) + p[P_LAT0:] for p in phases[i + 1 :]]
        self.by_vessel[v] = phases[:i] + ([head] if t > phases[i][P_T0] else []) + new + tail
        self._start_cache.pop(v, None)

    def table(self) -> dict[str, np.ndarray]:
        flat = Itineraries()
        flat.phases = [p for phases in self.by_vessel for p in phases]
        return flat.table()


def plant_loiters(plan: EditablePlan, fleet: list[Vessel], harbour: Harbour, cfg: SimulateConfig, span_s: int, rng):
    """Pause vessels on a sea leg to drift slowly around a point; returns [(vessel, start_s, end_s)].

    The drift visits waypoints within LOITER_WANDER_NM of where the vessel stopped at
    LOITER_SPEED_KN, so every report stays within 2 * LOITER_WANDER_NM of the run's mean position.
    """
    wanted, planted = _planned(cfg.loiters_per_day, cfg), []
    low_s, high_s = (int(round(m * 60)) for m in cfg.loiter_minutes)
    for _ in range(wanted * 40):
        if len(planted) == wanted:
            break
        v, at_s = int(rng.integers(cfg.vessels)), int(rng.integers(0, max(span_s, 1)))
        length_s = int(rng.integers(low_s, high_s + 1))
        if at_s < PLANT_EDGE_S or at_s + length_s + PLANT_EDGE_S > span_s or at_s <= plan.frozen[v]:
            continue
        i = plan.phase_at(v, at_s)
        if i < 0:
            continue
        leg = plan.by_vessel[v][i]
        if leg[P_KIND] != LEG or at_s - leg[P_T0] < PLANT_EDGE_S or leg[P_T1] - at_s < PLANT_EDGE_S:
            continue
        centre = _point(leg, at_s)
        if not _clear_of_all_ports(centre, harbour, PLANT_PORT_CLEARANCE_NM):
            continue
        drift, t, here = [], at_s, centre
        while True:
            back = t - at_s >= length_s
            there = centre if back else destination(*centre, rng.uniform(0, 360), rng.uniform(*LOITER_WANDER_NM))
            speed = float(rng.uniform(*LOITER_SPEED_KN))
            step = max(60, int(round(float(distance_nm(*here, *there)) / speed * 3600)))
            drift.append((v, LOITER, STATUS_UNDER_WAY, t, t + step, *here, *there, speed, 0.0, -1))
            t, here = t + step, there
            if back:
                break
        if t + PLANT_EDGE_S > span_s:
            continue
        rest = (v, LEG, leg[P_STATUS], t, leg[P_T1] + (t - at_s), *centre, leg[P_LAT1], leg[P_LON1], leg[P_SPEED], 0.0, -1)
        plan.replace_from(v, i, at_s, centre, drift + [rest], t - at_s)
        plan.frozen[v] = t + PLANT_EDGE_S
        plan.busy[v].append((at_s - PLANT_EDGE_S, t + PLANT_EDGE_S))
        planted.append((v, at_s, t))
    return planted


def _velocity(speed_kn: float, course_deg: float) -> np.ndarray:
    return speed_kn * np.array([np.sin(np.radians(course_deg)), np.cos(np.radians(course_deg))])  # east, north


def plant_encounters(plan: EditablePlan, fleet: list[Vessel], harbour: Harbour, cfg: SimulateConfig, span_s: int, rng):
    """Schedule close encounters of each COLREG type at sea; returns [(vessel_a, vessel_b, cpa_s, situation)].

    Vessel A keeps its track: at time T it is at P on a straight sea leg. Partner B is rerouted from
    an earlier point of one of its legs (speed adjusted within its kind's range) to a straight run
    through P_B at T, P_B lying `miss` nm from P at right angles to the relative motion, so the CPA
    is at T and `miss` nm; then B sails on to where its leg was going, the rest of its plan shifted.
    """
    per_type = _planned(cfg.encounters_per_day, cfg)
    planted: list[tuple[int, int, int, str]] = []
    if per_type == 0 or cfg.vessels < 2:
        return planted
    # where each vessel is every hour (as first planned): partners are only sought within reach
    phases = plan.table()
    hours = np.arange(-ENCOUNTER_REROUTE_S, span_s + 3600, 3600)
    vessel = np.repeat(np.arange(cfg.vessels), hours.size)
    key = phases["vessel"] * KEY_SPAN_S + (phases["t0"] + KEY_OFFSET_S)
    i = np.clip(np.searchsorted(key, vessel * KEY_SPAN_S + (np.tile(hours, cfg.vessels) + KEY_OFFSET_S), side="right") - 1, 0, None)
    fraction = np.clip((np.tile(hours, cfg.vessels) - phases["t0"][i]) / (phases["t1"][i] - phases["t0"][i]), 0.0, 1.0)
    lat, lon = great_circle_points(phases["lat0"][i], phases["lon0"][i], phases["lat1"][i], phases["lon1"][i], fraction)
    hourly = (hours[0], lat.reshape(cfg.vessels, hours.size), lon.reshape(cfg.vessels, hours.size))
    for situation in [s for _ in range(per_type) for s in SITUATIONS]:
        for _ in range(ENCOUNTER_TRIES):
            found = _try_encounter(plan, fleet, harbour, cfg, span_s, situation, rng, hourly)
            if found is not None:
                planted.append(found)
                break
    return planted


def _destination_many(lat, lon, bearing, dist_nm) -> tuple[np.ndarray, np.ndarray]:
    """tasks.geo.destination, vectorised."""
    phi, lam, theta = np.radians(lat), np.radians(lon), np.radians(bearing)
    delta = np.asarray(dist_nm, dtype=float) / EARTH_RADIUS_NM
    phi2 = np.arcsin(np.sin(phi) * np.cos(delta) + np.cos(phi) * np.sin(delta) * np.cos(theta))
    lam2 = lam + np.arctan2(np.sin(theta) * np.sin(delta) * np.cos(phi), np.cos(delta) - np.sin(phi) * np.sin(phi2))
    return np.degrees(phi2), (np.degrees(lam2) + 540.0) % 360.0 - 180.0


def _try_encounter(plan: EditablePlan, fleet, harbour: Harbour, cfg: SimulateConfig, span_s: int, situation: str, rng, hourly):
    lead_s = int(rng.integers(*ENCOUNTER_LEAD_MINUTES)) * 60
    out_s = int(rng.integers(*ENCOUNTER_RUN_OUT_MINUTES)) * 60
    a = int(rng.integers(cfg.vessels))
    low, high = lead_s + 600, span_s - out_s - 600
    if high <= low:
        return None
    cpa_s = int(rng.integers(low, high))
    miss = float(rng.uniform(*ENCOUNTER_MISS_NM[situation]))
    side = 1.0 if rng.random() < 0.5 else -1.0
    turn = {"head_on": 180.0 + rng.uniform(-4.0, 4.0), "crossing": side * rng.uniform(80.0, 110.0)}.get(
        situation, float(rng.uniform(-8.0, 8.0))
    )
    window = (cpa_s - lead_s, cpa_s + out_s + 600)
    i = plan.phase_at(a, cpa_s)
    if i < 0 or _overlaps(plan.busy[a], *window):
        return None
    leg_a = plan.by_vessel[a][i]
    if leg_a[P_KIND] != LEG or leg_a[P_T0] > cpa_s - lead_s or leg_a[P_T1] < cpa_s + out_s:
        return None
    p = _point(leg_a, cpa_s)
    if not _clear_of_all_ports(p, harbour, PLANT_PORT_CLEARANCE_NM):
        return None
    course_a, speed_a = float(bearing_deg(p[0], p[1], leg_a[P_LAT1], leg_a[P_LON1])), leg_a[P_SPEED]
    course_b = float((course_a + turn) % 360.0)
    t_in = cpa_s - lead_s

    # candidate reroute points: B on a sea leg some time before it must start its straight run in
    first_hour, hourly_lat, hourly_lon = hourly
    column = min(max(int((t_in - ENCOUNTER_REROUTE_S // 2 - first_hour) // 3600), 0), hourly_lat.shape[1] - 1)
    reach = distance_nm(p[0], p[1], hourly_lat[:, column], hourly_lon[:, column]) <= ENCOUNTER_REACH_NM
    candidates = []
    for b in np.flatnonzero(reach).tolist():
        if b == a or plan.frozen[b] >= t_in - 600 or _overlaps(plan.busy[b], *window):
            continue
        for j in plan.phases_between(b, t_in - ENCOUNTER_REROUTE_S, t_in - 600):
            leg = plan.by_vessel[b][j]
            start = max(leg[P_T0] + 60, t_in - ENCOUNTER_REROUTE_S, int(plan.frozen[b]) + 1)
            end = min(leg[P_T1] - 60, t_in - 600)
            if leg[P_KIND] != LEG or end <= start:
                continue
            if situation == "overtaking" and abs(leg[P_SPEED] - speed_a) < OVERTAKE_MIN_SPEED_DIFF_KN:
                continue
            candidates.append((b, j, start, end, *leg[P_T0 : P_SPEED + 1], *fleet[b].kind.speed_kn))
    if not candidates:
        return None
    c = {k: np.array(v) for k, v in zip(("b", "j", "start", "end", "t0", "t1", "lat0", "lon0", "lat1", "lon1", "speed", "lo", "hi"), zip(*candidates))}
    velocity_b = c["speed"][:, None] * np.array([np.sin(np.radians(course_b)), np.cos(np.radians(course_b))])
    relative = velocity_b - speed_a * np.array([np.sin(np.radians(course_a)), np.cos(np.radians(course_a))])
    across = np.degrees(np.arctan2(-relative[:, 1], relative[:, 0])) + (0.0 if side > 0 else 180.0)  # right angles to it
    pb_lat, pb_lon = _destination_many(p[0], p[1], across, miss)
    in_lat, in_lon = _destination_many(pb_lat, pb_lon, course_b + 180.0, c["speed"] * lead_s / 3600.0)
    out_lat, out_lon = _destination_many(pb_lat, pb_lon, course_b, c["speed"] * out_s / 3600.0)
    counts = (c["end"] - c["start"] + 299) // 300
    owner = np.repeat(np.arange(len(candidates)), counts)
    times = c["start"][owner] + 300 * (np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts))
    fraction = (times - c["t0"][owner]) / (c["t1"][owner] - c["t0"][owner])
    q_lat, q_lon = great_circle_points(c["lat0"][owner], c["lon0"][owner], c["lat1"][owner], c["lon1"][owner], fraction)
    approach_kn = distance_nm(q_lat, q_lon, in_lat[owner], in_lon[owner]) / ((t_in - times) / 3600.0)
    back_s = distance_nm(out_lat, out_lon, c["lat1"], c["lon1"]) / c["speed"] * 3600.0
    arrives_late = cpa_s + out_s + back_s >= c["t1"]  # else B's plan would end before the span does
    ok = (approach_kn >= c["lo"][owner]) & (approach_kn <= c["hi"][owner]) & arrives_late[owner]
    if not ok.any():
        return None
    chosen = int(rng.choice(np.unique(owner[ok])))
    k = int(np.flatnonzero(ok & (owner == chosen))[-1])  # reroute as late as possible: the least change to B's voyage
    b, j, ts = int(c["b"][chosen]), int(c["j"][chosen]), int(times[k])
    leg, speed_b, q = plan.by_vessel[b][j], float(c["speed"][chosen]), (float(q_lat[k]), float(q_lon[k]))
    w_in, w_out = (float(in_lat[chosen]), float(in_lon[chosen])), (float(out_lat[chosen]), float(out_lon[chosen]))
    t_out = cpa_s + out_s
    t_back = max(t_out + max(60, int(round(float(back_s[chosen])))), leg[P_T1])
    status = leg[P_STATUS]
    new = [
        (b, LEG, status, ts, t_in, *q, *w_in, float(approach_kn[k]), 0.0, -1),
        (b, LEG, status, t_in, t_out, *w_in, *w_out, speed_b, 0.0, -1),
        (b, LEG, status, t_out, t_back, *w_out, leg[P_LAT1], leg[P_LON1], speed_b, 0.0, -1),
    ]
    plan.replace_from(b, j, ts, q, new, t_back - leg[P_T1])
    for v in (a, b):
        plan.frozen[v] = max(plan.frozen[v], cpa_s + out_s)
        plan.busy[v].append(window)
    return a, b, cpa_s, situation


# --- planted episodes on the reports: position spikes, speed glitches, twin transmitters -------


@functools.lru_cache(maxsize=1)
def _max_sog_table() -> tuple[tuple[int, int, float], ...]:
    table = pd.read_csv(MAX_SPEED_PATH)
    return tuple(zip(table["type_from"].astype(int), table["type_to"].astype(int), table["max_sog_kn"].astype(float)))


def type_max_sog(type_codes: np.ndarray) -> np.ndarray:
    """Plausible maximum SOG (kn) per AIS ship-type code from tasks/data/vessel_type_max_speed.csv; NaN: none."""
    codes = np.asarray(type_codes)
    limits = np.full(codes.shape, np.nan)
    for low, high, limit in _max_sog_table():
        limits[(codes >= low) & (codes <= high)] = limit
    return limits


def _sea_leg_rows(rows, phases, fleet: list[Vessel]) -> np.ndarray:
    valid = np.array([v.valid_mmsi for v in fleet])
    phase = np.maximum(rows["phase"], 0)
    keep = (rows["origin"] == ROW_NORMAL) & (phases["kind"][phase] == LEG) & valid[rows["vessel"]]
    return np.flatnonzero(keep)


def _row_clear_of_ports(rows, r: int, harbour: Harbour) -> bool:
    return _clear_of_all_ports((rows["true_lat"][r], rows["true_lon"][r]), harbour, PLANT_PORT_CLEARANCE_NM)


def plant_position_spikes(rows, phases, fleet, harbour: Harbour, cfg: SimulateConfig, busy, rng) -> list[int]:
    """Move single sea-leg reports 30-60 nm off track; returns their row indices.

    A spike's neighbours are at most NEIGHBOUR_MAX_S away, so staging's implied speed from both
    sides is hundreds of knots: the row is flagged impossible_jump.
    """
    wanted, spikes = _planned(cfg.position_spikes_per_day, cfg), []
    candidates = _sea_leg_rows(rows, phases, fleet)
    n, vessel, t = rows["t"].size, rows["vessel"], rows["t"]
    for _ in range(wanted * 50 if candidates.size else 0):
        if len(spikes) == wanted:
            break
        r = int(candidates[rng.integers(candidates.size)])
        bearing, offset = float(rng.uniform(0, 360)), float(rng.uniform(*SPIKE_OFFSET_NM))
        v = int(vessel[r])
        if r == 0 or r == n - 1 or vessel[r - 1] != v or vessel[r + 1] != v:
            continue
        if t[r] - t[r - 1] > NEIGHBOUR_MAX_S or t[r + 1] - t[r] > NEIGHBOUR_MAX_S or rows["origin"][r - 1 : r + 2].any():
            continue
        if _overlaps(busy[v], int(t[r]) - BUSY_MARGIN_S, int(t[r]) + BUSY_MARGIN_S) or not _row_clear_of_ports(rows, r, harbour):
            continue
        rows["lat"][r], rows["lon"][r] = destination(rows["true_lat"][r], rows["true_lon"][r], bearing, offset)
        rows["origin"][r] = ROW_SPIKE
        busy[v].append((int(t[r]) - BUSY_MARGIN_S, int(t[r]) + BUSY_MARGIN_S))
        spikes.append(r)
    return spikes


def plant_speed_glitches(rows, phases, fleet, harbour: Harbour, cfg: SimulateConfig, busy, rng) -> list[np.ndarray]:
    """A few consecutive sea-leg reports whose SOG reads 1.5-3x the type's maximum; positions stay on track."""
    wanted, glitches = _planned(cfg.speed_anomalies_per_day, cfg), []
    candidates = _sea_leg_rows(rows, phases, fleet)
    n, vessel, t = rows["t"].size, rows["vessel"], rows["t"]
    for _ in range(wanted * 50 if candidates.size else 0):
        if len(glitches) == wanted:
            break
        r = int(candidates[rng.integers(candidates.size)])
        k = int(rng.integers(GLITCH_REPORTS[0], GLITCH_REPORTS[1] + 1))
        factor = rng.uniform(*GLITCH_FACTOR, k)
        v, last = int(vessel[r]), r + k - 1
        if last >= n or (vessel[r : last + 1] != v).any() or (rows["phase"][r : last + 1] != rows["phase"][r]).any():
            continue
        if rows["origin"][r : last + 1].any() or _overlaps(busy[v], int(t[r]) - BUSY_MARGIN_S, int(t[last]) + BUSY_MARGIN_S):
            continue
        if not (_row_clear_of_ports(rows, r, harbour) and _row_clear_of_ports(rows, last, harbour)):
            continue
        limit = float(type_max_sog(np.array([fleet[v].type_code]))[0])
        rows["sog"][r : last + 1] = np.round(np.minimum(limit * factor, GLITCH_SOG_CEILING_KN), 1)
        busy[v].append((int(t[r]) - BUSY_MARGIN_S, int(t[last]) + BUSY_MARGIN_S))
        glitches.append(np.arange(r, last + 1))
    return glitches


def plant_identity_conflicts(rows, phases, fleet, cfg: SimulateConfig, span_s: int, busy, rng) -> tuple[dict, list[dict]]:
    """A twin transmitter far away sends a vessel's MMSI and static data for a while (rows appended).

    The vessel itself is on passage meanwhile (not in a port call), so the twin never blurs a call.

    The twin reports every TWIN_INTERVAL_S (+ up to TWIN_JITTER_S), at least 3 of the vessel's own
    report intervals, so between two twin reports lie >= 2 of the vessel's own: staging flags every
    twin report as an impossible jump and keeps the vessel's own track whole (no false gap).
    """
    wanted, conflicts, twins = _planned(cfg.identity_conflicts_per_day, cfg), [], []
    low_s, high_s = (int(round(m * 60)) for m in cfg.identity_conflict_minutes)
    for _ in range(wanted * 40):
        if len(conflicts) == wanted:
            break
        v, length = int(rng.integers(cfg.vessels)), int(rng.integers(low_s, high_s + 1))
        if span_s - length - 2 * PLANT_EDGE_S <= 0:
            break
        begin = int(rng.integers(PLANT_EDGE_S, span_s - length - PLANT_EDGE_S))
        bearing, offset, course, speed = (float(rng.uniform(*bounds)) for bounds in ((0, 360), TWIN_DISTANCE_NM, (0, 360), TWIN_SPEED_KN))
        count = length // TWIN_INTERVAL_S + 1
        twin_t = begin + TWIN_INTERVAL_S * np.arange(count) + rng.integers(0, TWIN_JITTER_S, count)
        noise = rng.normal(0, GPS_NOISE_M, (2, count))
        sog_noise, cog_noise = rng.uniform(-SOG_NOISE_KN, SOG_NOISE_KN, count), rng.uniform(-COG_NOISE_DEG, COG_NOISE_DEG, count)
        if _overlaps(busy[v], begin - BUSY_MARGIN_S, begin + length + BUSY_MARGIN_S):
            continue
        mine = np.flatnonzero((rows["vessel"] == v) & (rows["origin"] == ROW_NORMAL))
        times = rows["t"][mine]
        around = (times >= begin - NEIGHBOUR_MAX_S) & (times <= begin + length + NEIGHBOUR_MAX_S)
        if times.size < 2 or times[0] > begin - NEIGHBOUR_MAX_S or times[-1] < begin + length + NEIGHBOUR_MAX_S:
            continue
        if around.sum() < 2 or np.diff(times[around]).max() > NEIGHBOUR_MAX_S:
            continue  # the vessel's own reports must run on through the interval
        if not np.isin(phases["kind"][rows["phase"][mine[around]]], UNDERWAY_SPELL_PHASES).all():
            continue
        twin_t = twin_t[twin_t <= begin + length]
        while np.isin(twin_t, times).any():  # same second, two places: staging would drop both as a conflict
            twin_t = twin_t + np.isin(twin_t, times)
        own_lat = np.interp(twin_t, times, rows["true_lat"][mine])
        own_lon = np.interp(twin_t, times, rows["true_lon"][mine])
        origin = destination(own_lat[0], own_lon[0], bearing, offset)
        end = destination(*origin, course, speed * length / 3600.0)
        n = twin_t.size
        lat, lon = great_circle_points(np.full(n, origin[0]), np.full(n, origin[1]), np.full(n, end[0]), np.full(n, end[1]), (twin_t - twin_t[0]) / length)
        if distance_nm(lat, lon, own_lat, own_lon).min() < TWIN_MIN_SEPARATION_NM:
            continue
        heading = HEADING_NOT_AVAILABLE if fleet[v].heading_missing else int(round(course)) % 360
        twin = {
            "vessel": np.full(n, v), "phase": np.full(n, -1), "t": twin_t.astype(np.int64),
            "lat": lat + noise[0, :n] / METERS_PER_DEGREE_LAT,
            "lon": lon + noise[1, :n] / (METERS_PER_DEGREE_LAT * np.cos(np.radians(lat))),
            "sog": np.round(speed + sog_noise[:n], 1), "cog": np.round((course + cog_noise[:n]) % 360.0, 1) % 360.0,
            "heading": np.full(n, heading), "status": np.full(n, STATUS_UNDER_WAY),
            "true_lat": lat, "true_lon": lon, "course": np.full(n, course), "origin": np.full(n, ROW_TWIN),
        }  # fmt: skip
        twins.append(twin)
        busy[v].append((begin - BUSY_MARGIN_S, begin + length + BUSY_MARGIN_S))
        conflicts.append(
            {"vessel": v, "start": int(twin_t[0]), "end": int(twin_t[-1]), "lat_a": float(own_lat[0]), "lon_a": float(own_lon[0]),
             "lat_b": float(lat[0]), "lon_b": float(lon[0]), "guard": (begin - NEIGHBOUR_MAX_S, begin + length + NEIGHBOUR_MAX_S)}
        )  # fmt: skip
    if twins:
        rows = {k: np.concatenate([rows[k]] + [twin[k].astype(rows[k].dtype) for twin in twins]) for k in rows}
    return rows, conflicts


# --- ground truth of the facts contract (issue 4) --------------------------------------------


def _staged_mask(rows, fleet: list[Vessel]) -> np.ndarray:
    """Rows staging keeps in stg_ais_positions: valid MMSI, a position, not a twin's or a spike."""
    valid = np.array([v.valid_mmsi for v in fleet])
    return valid[rows["vessel"]] & (rows["origin"] == ROW_NORMAL) & (rows["lat"] != LAT_NOT_AVAILABLE)


def _track(rows, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The masked rows in (vessel, time) order."""
    picked = np.flatnonzero(mask)
    order = picked[np.lexsort((rows["t"][picked], rows["vessel"][picked]))]
    return _take(rows, order)


def _runs(vessel: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Run id per row: a new run starts where the vessel or the flag changes (rows in track order)."""
    change = np.ones(flag.size, dtype=bool)
    change[1:] = (vessel[1:] != vessel[:-1]) | (flag[1:] != flag[:-1])
    return np.cumsum(change) - 1


def port_stays_truth(rows, phases, calls: pd.DataFrame) -> pd.DataFrame:
    """Anchorage and berth stays of each call as the reports show them: first/last report of each kind.

    Simulator anchorages lie 1.5-2.5 nm and berths 0.2-0.8 nm from the port point, so the contract's
    $berth_radius_nm = 1.0 splits them as the phase kinds do. The first stay of a call cut at its
    start and the last stay of a call cut at its end are truncated.
    """
    kind = phases["kind"][rows["phase"]]
    call = phases["call"][rows["phase"]]
    pick = np.isin(kind, STOPPED_PHASES) & np.isin(call, calls["call"].to_numpy()) & (rows["origin"] == ROW_NORMAL)
    frame = pd.DataFrame({"call": call[pick], "kind": kind[pick], "t": rows["t"][pick]})
    stays = frame.groupby(["call", "kind"], as_index=False).agg(start=("t", "min"), end=("t", "max"))
    stays = stays.merge(calls[["call", "vessel", "port", "cut_start", "cut_end"]], on="call").sort_values(["call", "start"])
    first = ~stays["call"].duplicated(keep="first")
    last = ~stays["call"].duplicated(keep="last")
    stays["truncated"] = (first & stays["cut_start"]) | (last & stays["cut_end"])
    stays["kind"] = np.where(stays["kind"] == ANCHORED, "anchorage", "berth")
    return stays[["vessel", "port", "kind", "start", "end", "truncated"]].reset_index(drop=True)


def voyages_truth(calls: pd.DataFrame, phases, rows, fleet: list[Vessel]) -> pd.DataFrame:
    """Passages between consecutive port calls of a vessel: departure of one to arrival of the next.

    The passages before a vessel's first and after its last call seen are listed truncated, with the
    planned ports and the times the data does not show left empty (NaN here). A passage is truncated
    too when its call at either end is cut by the data's edge and shows less than MIN_CALL_MINUTES of
    stops: the data cannot tell that call from a short stop.
    """
    has_call = phases["call"] >= 0
    call_vessel: dict[int, int] = dict(zip(phases["call"][has_call].tolist(), phases["vessel"][has_call].tolist()))
    begin: dict[int, int] = {}
    end: dict[int, int] = {}
    for c, t0, t1 in zip(phases["call"][has_call].tolist(), phases["t0"][has_call].tolist(), phases["t1"][has_call].tolist()):
        begin[c], end[c] = min(begin.get(c, t0), t0), max(end.get(c, t1), t1)
    normal = rows["origin"] == ROW_NORMAL
    seen = pd.DataFrame({"vessel": rows["vessel"][normal], "t": rows["t"][normal]}).groupby("vessel")["t"].agg(["min", "max"])
    first_seen, last_seen = seen["min"].to_dict(), seen["max"].to_dict()
    by_vessel: dict[int, list[tuple]] = {}
    for call in calls.sort_values("arrival").itertuples(index=False):
        by_vessel.setdefault(int(call.vessel), []).append(call)
    own_calls: dict[int, list[int]] = {}
    for c in sorted(call_vessel):
        own_calls.setdefault(call_vessel[c], []).append(c)
    voyages = []
    for v, vessel in enumerate(fleet):
        if not vessel.valid_mmsi or v not in first_seen:
            continue
        mine = by_vessel.get(v, [])
        if not mine:
            before = [c for c in own_calls.get(v, []) if end[c] <= first_seen[v]]
            after = [c for c in own_calls.get(v, []) if begin[c] >= last_seen[v]]
            if before and after:
                voyages.append((v, before[-1], after[0], np.nan, np.nan, True))
            continue
        first, last = mine[0], mine[-1]
        if not first.cut_start and call_vessel.get(first.call - 1) == v:
            voyages.append((v, first.call - 1, first.call, np.nan, first.arrival, True))
        for one, nxt in zip(mine[:-1], mine[1:]):
            too_short = [c.cut_start or c.cut_end for c in (one, nxt) if c.departure - c.arrival < MIN_CALL_MINUTES * 60]
            voyages.append((v, one.call, nxt.call, one.departure, nxt.arrival, bool(one.cut_end or nxt.cut_start or any(too_short))))
        if not last.cut_end and call_vessel.get(last.call + 1) == v:
            voyages.append((v, last.call, last.call + 1, last.departure, np.nan, True))
    return pd.DataFrame(voyages, columns=["vessel", "from_call", "to_call", "departure", "arrival", "truncated"])


def loitering_truth(rows, fleet: list[Vessel], phases, harbour: Harbour) -> pd.DataFrame:
    """The contract's loitering, applied to the reports staging keeps.

    A maximal run of consecutive reports of one vessel, each farther than PORT_RADIUS_NM from every
    port with SOG <= LOITER_MAX_SOG_KN (not available: no), lasting >= LOITER_MIN_MINUTES, all within
    LOITER_RADIUS_NM of the run's mean position. Moored and anchored reports are within 2.5 nm of
    their port by construction, so only the others are measured against the port table.
    """
    track = _track(rows, _staged_mask(rows, fleet))
    lat, lon = np.round(track["lat"], 5), np.round(track["lon"], 5)  # as written
    slow = (track["sog"] != SOG_NOT_AVAILABLE) & (track["sog"] <= LOITER_MAX_SOG_KN)
    slow &= ~np.isin(phases["kind"][track["phase"]], STOPPED_PHASES)
    far = np.zeros(slow.size, dtype=bool)
    idx = np.flatnonzero(slow)
    if idx.size:
        dist = distance_nm(lat[idx, None], lon[idx, None], harbour.lat[None, :], harbour.lon[None, :])
        far[idx] = dist.min(axis=1) > PORT_RADIUS_NM
    run = _runs(track["vessel"], far)
    frame = pd.DataFrame({"run": run, "vessel": track["vessel"], "t": track["t"], "lat": lat, "lon": lon})[far]
    runs = frame.groupby("run").agg(
        vessel=("vessel", "first"), start=("t", "min"), end=("t", "max"), center_lat=("lat", "mean"), center_lon=("lon", "mean")
    )
    runs = runs[(runs["end"] - runs["start"]) >= LOITER_MIN_MINUTES * 60]
    frame = frame.merge(runs[["center_lat", "center_lon"]], left_on="run", right_index=True)
    radius = distance_nm(frame["lat"], frame["lon"], frame["center_lat"], frame["center_lon"])
    widest = pd.Series(radius, index=frame.index).groupby(frame["run"]).max()
    return runs[widest.reindex(runs.index).to_numpy() <= LOITER_RADIUS_NM].reset_index(drop=True)


def speed_anomalies_truth(rows, fleet: list[Vessel]) -> pd.DataFrame:
    """Episodes of consecutive staged reports whose SOG exceeds the type's plausible maximum."""
    track = _track(rows, _staged_mask(rows, fleet))
    code = np.array([v.type_code for v in fleet])[track["vessel"]]
    limit = type_max_sog(code)
    fast = (track["sog"] != SOG_NOT_AVAILABLE) & (track["sog"] > np.nan_to_num(limit, nan=np.inf))
    frame = pd.DataFrame({"run": _runs(track["vessel"], fast), "vessel": track["vessel"], "code": code, "t": track["t"], "sog": track["sog"]})
    return (
        frame[fast]
        .groupby("run")
        .agg(vessel=("vessel", "first"), vessel_type_code=("code", "first"), start=("t", "min"), end=("t", "max"), max_sog_kn=("sog", "max"))
        .reset_index(drop=True)
    )


def _written_coordinate(values: np.ndarray) -> np.ndarray:
    """Coordinates as ais.csv writes them (5 decimals), exact where a 0.1-degree cell edge is near."""
    approx = np.round(values, 5)
    near_edge = np.abs(approx * 10 - np.round(approx * 10)) < 1e-4
    approx[near_edge] = [float(f"{x:.5f}") for x in values[near_edge]]
    return approx


def traffic_truth(rows, fleet: list[Vessel], start_epoch_s: int) -> pd.DataFrame:
    """Distinct vessels per hour, 0.1-degree cell (floor(coordinate / cell_deg)) and type code, from staged rows."""
    staged = _staged_mask(rows, fleet)
    lat, lon = _written_coordinate(rows["lat"][staged]), _written_coordinate(rows["lon"][staged])
    frame = pd.DataFrame(
        {
            "hour": (start_epoch_s + rows["t"][staged]) // 3600,
            "cell_lat_idx": np.floor(lat / TRAFFIC_CELL_DEG).astype(np.int64),
            "cell_lon_idx": np.floor(lon / TRAFFIC_CELL_DEG).astype(np.int64),
            "vessel_type_code": np.array([v.type_code for v in fleet])[rows["vessel"][staged]],
            "vessel": rows["vessel"][staged],
        }
    )
    keys = ["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code"]
    return frame.groupby(keys, as_index=False)["vessel"].nunique().rename(columns={"vessel": "vessels"})


def _path_position_nm(rows, phases) -> np.ndarray:
    """Distance run along the noiseless track since the vessel's first phase, per row."""
    length = np.where(
        np.isin(phases["kind"], MOVING_PHASES),
        distance_nm(phases["lat0"], phases["lon0"], phases["lat1"], phases["lon1"]),
        0.0,
    )
    cumulative = np.cumsum(length)
    first = np.r_[True, phases["vessel"][1:] != phases["vessel"][:-1]]
    before = cumulative - length
    offset = np.maximum.accumulate(np.where(first, before, 0.0))  # phases are in (vessel, time) order
    start = before - offset
    p = rows["phase"]
    fraction = (rows["t"] - phases["t0"][p]) / (phases["t1"][p] - phases["t0"][p])
    return start[p] + fraction * length[p]


def movement_truth(rows, phases, fleet: list[Vessel], start_epoch_s: int) -> pd.DataFrame:
    """Per vessel and MOVEMENT_WINDOW_MINUTES window (staged reports, >= MOVEMENT_MIN_POSITIONS of them).

    Between consecutive reports of the window: the noiseless path length run, and the time, which
    goes to the earlier report's state (moored phase: moored; anchored phase: anchored; otherwise
    underway). A major course change: among the window's reports with SOG and COG (others skipped),
    two consecutive ones both under way whose true courses differ by more than MAJOR_TURN_DEG.
    """
    track = _track(rows, _staged_mask(rows, fleet))
    window_s = MOVEMENT_WINDOW_MINUTES * 60
    window = (start_epoch_s + track["t"]) // window_s
    kind = phases["kind"][track["phase"]]
    position = _path_position_nm(track, phases)
    pair = np.r_[(track["vessel"][1:] == track["vessel"][:-1]) & (window[1:] == window[:-1]), False]
    nxt = np.minimum(np.arange(pair.size) + 1, pair.size - 1)
    minutes = np.where(pair, (track["t"][nxt] - track["t"]) / 60.0, 0.0)
    reported = (track["cog"] != COG_NOT_AVAILABLE) & (track["sog"] != SOG_NOT_AVAILABLE)
    turns = np.zeros(kind.size, dtype=np.int64)
    r = np.flatnonzero(reported)
    if r.size > 1:
        same = (track["vessel"][r][1:] == track["vessel"][r][:-1]) & (window[r][1:] == window[r][:-1])
        moving = np.isin(kind[r], MOVING_PHASES)
        change = np.abs((track["course"][r][1:] - track["course"][r][:-1] + 180.0) % 360.0 - 180.0)
        turns[r[1:]] = same & moving[1:] & moving[:-1] & (change > MAJOR_TURN_DEG)
    frame = pd.DataFrame(
        {
            "vessel": track["vessel"],
            "window": window,
            "distance_nm": np.where(pair, position[nxt] - position, 0.0),
            "minutes_underway": np.where(np.isin(kind, STOPPED_PHASES), 0.0, minutes),
            "minutes_moored": np.where(kind == MOORED, minutes, 0.0),
            "minutes_anchored": np.where(kind == ANCHORED, minutes, 0.0),
            "major_course_changes": turns,
            "has_sog": track["sog"] != SOG_NOT_AVAILABLE,
        }
    )
    windows = frame.groupby(["vessel", "window"], as_index=False).agg(
        positions=("distance_nm", "size"), has_sog=("has_sog", "any"), distance_nm=("distance_nm", "sum"),
        minutes_underway=("minutes_underway", "sum"), minutes_moored=("minutes_moored", "sum"),
        minutes_anchored=("minutes_anchored", "sum"), major_course_changes=("major_course_changes", "sum"),
    )  # fmt: skip
    windows = windows[(windows["positions"] >= MOVEMENT_MIN_POSITIONS) & windows["has_sog"]]
    windows["window_start"] = windows["window"] * window_s
    return windows.drop(columns=["positions", "has_sog", "window"]).reset_index(drop=True)


def colreg_situation(course_a, course_b, bearing_ab) -> np.ndarray:
    """COLREG situation of a pair from its courses and the bearing of b from a (degrees true).

    head_on: courses differ by >= 170 deg (reciprocal within 10 deg); overtaking: courses differ by
    < 67.5 deg and one sees the other more than 22.5 deg abaft its beam (relative bearing in
    (112.5, 247.5)); crossing: otherwise. As sql/close_encounters.sql, the bearing is taken where b
    was relative to a when the approach entered the horizon (CPA time - ENCOUNTER_TCPA_MINUTES, dead
    reckoned from the closest sample), so the situation does not depend on which instant saw it.
    """
    course_a, course_b, bearing_ab = (np.asarray(x, dtype=float) for x in (course_a, course_b, bearing_ab))
    difference = np.abs((course_b - course_a + 540.0) % 360.0 - 180.0)
    seen_from_a = (bearing_ab - course_a) % 360.0
    seen_from_b = (bearing_ab + 180.0 - course_b) % 360.0
    head_on = difference >= 170.0
    abaft = ((seen_from_a > 112.5) & (seen_from_a < 247.5)) | ((seen_from_b > 112.5) & (seen_from_b < 247.5))
    overtaking = (difference < 67.5) & abaft
    return np.where(head_on, "head_on", np.where(overtaking, "overtaking", "crossing"))


class _Kinematics:
    """Noiseless position, SOG and COG of any vessel at any time, from the phase table."""

    def __init__(self, phases, fleet: list[Vessel]) -> None:
        self.p = phases
        self.key = phases["vessel"] * KEY_SPAN_S + (phases["t0"] + KEY_OFFSET_S)
        valid = np.array([v.valid_mmsi for v in fleet])
        self.underway = (
            np.isin(phases["kind"], MOVING_PHASES) & (phases["speed"] >= ENCOUNTER_MIN_SOG_KN) & valid[phases["vessel"]]
        )
        # when the vessel stops being under way (next phase below ENCOUNTER_MIN_SOG_KN: anchored,
        # moored, loitering) per phase of a run of underway phases; inf when the run outlasts the plan
        vessel, t1 = phases["vessel"], phases["t1"].astype(float)
        goes_on = np.r_[(vessel[1:] == vessel[:-1]) & self.underway[1:] & self.underway[:-1], False]
        last_of_vessel = np.r_[vessel[1:] != vessel[:-1], True]
        end = np.where(last_of_vessel & self.underway, np.inf, t1)
        run = np.cumsum(np.r_[True, ~goes_on[:-1]])  # phases joined by goes_on share a run number
        self.until = pd.Series(end).groupby(run).transform("last").to_numpy()

    def index(self, vessel: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Phase index per (vessel, time); -1 where the vessel is not under way at >= ENCOUNTER_MIN_SOG_KN."""
        i = np.searchsorted(self.key, vessel * KEY_SPAN_S + (t + KEY_OFFSET_S), side="right") - 1
        i = np.clip(i, 0, self.key.size - 1)
        p = self.p
        ok = (p["vessel"][i] == vessel) & (t >= p["t0"][i]) & (t < p["t1"][i]) & self.underway[i]
        return np.where(ok, i, -1)

    def state(self, i: np.ndarray, t: np.ndarray):
        """(lat, lon, sog, cog) in phase i at time t."""
        p = self.p
        fraction = (t - p["t0"][i]) / (p["t1"][i] - p["t0"][i])
        lat, lon = great_circle_points(p["lat0"][i], p["lon0"][i], p["lat1"][i], p["lon1"][i], fraction)
        return lat, lon, p["speed"][i], bearing_deg(lat, lon, p["lat1"][i], p["lon1"][i])


def _report_cpa(lat_a, lon_a, sog_a, cog_a, lead_a_h, lat_b, lon_b, sog_b, cog_b, lead_b_h):
    """As sql/close_encounters.sql: each report dead-reckoned forward by its lead (hours) to the later
    report time, then on a flat projection around the pair: CPA (nm), TCPA (hours, from the later report
    time), the relative speed (kn) and the bearing of b from a when the approach entered the horizon."""
    cos_lat = np.cos(np.radians((lat_a + lat_b) / 2.0))
    va = np.stack([sog_a * np.sin(np.radians(cog_a)), sog_a * np.cos(np.radians(cog_a))])
    vb = np.stack([sog_b * np.sin(np.radians(cog_b)), sog_b * np.cos(np.radians(cog_b))])
    dx = ((lon_b - lon_a + 540.0) % 360.0 - 180.0) * NM_PER_DEGREE * cos_lat + vb[0] * lead_b_h - va[0] * lead_a_h
    dy = (lat_b - lat_a) * NM_PER_DEGREE + vb[1] * lead_b_h - va[1] * lead_a_h
    wx, wy = vb[0] - va[0], vb[1] - va[1]
    w2 = wx * wx + wy * wy
    tcpa = np.where(w2 < 1e-12, 0.0, -(dx * wx + dy * wy) / np.where(w2 < 1e-12, 1.0, w2))  # no relative motion: CPA now
    cpa = np.hypot(dx + wx * tcpa, dy + wy * tcpa)
    back = tcpa - ENCOUNTER_TCPA_MINUTES / 60.0  # offset at the CPA less the relative motion over the horizon
    return cpa, tcpa, np.sqrt(w2), np.degrees(np.arctan2(dx + wx * back, dy + wy * back)) % 360.0


def _bucket_reports(rows, fleet: list[Vessel], kin: _Kinematics, start_epoch_s: int) -> pd.DataFrame:
    """Each valid vessel's first usable report per time bucket while truly under way, with its noiseless
    state: what the definition dead-reckons. Usable: staged, SOG and COG given, SOG not a glitch above the
    type's maximum (the detector skips those, as speed_anomalies flags them)."""
    code = np.array([v.type_code for v in fleet])[rows["vessel"]]
    usable = _staged_mask(rows, fleet) & (rows["sog"] != SOG_NOT_AVAILABLE) & (rows["cog"] != COG_NOT_AVAILABLE)
    usable &= ~(rows["sog"] > np.nan_to_num(type_max_sog(code), nan=np.inf))
    vessel, t = rows["vessel"][usable], rows["t"][usable]
    phase = kin.index(vessel, t)
    vessel, t, phase = vessel[phase >= 0], t[phase >= 0], phase[phase >= 0]
    bucket = (start_epoch_s + t) // (ENCOUNTER_BUCKET_MINUTES * 60)
    order = np.lexsort((t, bucket, vessel))
    vessel, t, phase, bucket = vessel[order], t[order], phase[order], bucket[order]
    first = np.r_[True, (vessel[1:] != vessel[:-1]) | (bucket[1:] != bucket[:-1])]
    vessel, t, phase, bucket = vessel[first], t[first], phase[first], bucket[first]
    lat, lon, sog, cog = kin.state(phase, t.astype(float))
    return pd.DataFrame({"vessel": vessel, "t": t, "bucket": bucket, "lat": lat, "lon": lon, "sog": sog, "cog": cog,
                         "until": kin.until[phase]})  # fmt: skip


def _bucket_pairs(reports: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b) of reports in one bucket whose vessels can come within the CPA limit inside the
    horizon: same or neighbouring cells of a grid as wide as the farthest two such vessels can be apart."""
    if reports.empty:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    lat, lon, sog = (reports[c].to_numpy() for c in ("lat", "lon", "sog"))
    reach_h = (ENCOUNTER_TCPA_MINUTES + ENCOUNTER_BUCKET_MINUTES) / 60.0  # a report may lead the other's by a bucket
    cell_nm = ENCOUNTER_CPA_NM + 2.0 * sog.max() * reach_h
    cell_deg_lat = cell_nm / NM_PER_DEGREE
    cell_deg_lon = cell_deg_lat / max(np.cos(np.radians(min(np.abs(lat).max() + cell_deg_lat, 89.0))), 0.01)
    cy, cx = np.floor(lat / cell_deg_lat).astype(np.int64), np.floor((lon + 180.0) / cell_deg_lon).astype(np.int64)
    width, height = int(cx.max()) + 3, int(cy.max() - cy.min()) + 3  # longitudes near +-180 are few: no wrap needed here
    bucket = reports["bucket"].to_numpy() - reports["bucket"].min()
    cell = (bucket * height + (cy - cy.min() + 1)) * width + (cx + 1)
    offsets = np.array([dy * width + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    left = pd.DataFrame({"cell": cell, "a": np.arange(cell.size)})
    right = pd.DataFrame({"cell": (cell[:, None] + offsets[None, :]).ravel(), "b": np.repeat(np.arange(cell.size), offsets.size)})
    joined = left.merge(right, on="cell")
    ia, ib = joined["a"].to_numpy(), joined["b"].to_numpy()
    vessel = reports["vessel"].to_numpy()
    keep = vessel[ia] < vessel[ib]
    ia, ib = ia[keep], ib[keep]
    near = distance_nm(lat[ia], lon[ia], lat[ib], lon[ib]) <= ENCOUNTER_CPA_NM + (sog[ia] + sog[ib]) * reach_h
    return ia[near], ib[near]


def _velocity_error_kn(sog) -> np.ndarray:
    """One standard deviation of a reported velocity's error (kn): SOG noise along, COG noise across."""
    return np.hypot(SOG_NOISE_KN / np.sqrt(3.0), np.asarray(sog) * np.radians(COG_NOISE_DEG / np.sqrt(3.0)))


def _samples(reports: pd.DataFrame, ia: np.ndarray, ib: np.ndarray) -> pd.DataFrame:
    """The definition at each paired bucket on the noiseless states, with the noise bands around its limits."""
    r = {c: reports[c].to_numpy() for c in reports.columns}
    t_a, t_b = r["t"][ia], r["t"][ib]
    at = np.maximum(t_a, t_b)
    lead_a, lead_b = (at - t_a) / 3600.0, (at - t_b) / 3600.0
    cpa, tcpa, speed, bearing = _report_cpa(
        r["lat"][ia], r["lon"][ia], r["sog"][ia], r["cog"][ia], lead_a, r["lat"][ib], r["lon"][ib], r["sog"][ib], r["cog"][ib], lead_b
    )
    cpa_s = at + tcpa * 3600.0
    until = np.minimum(r["until"][ia], r["until"][ib])
    # noise bands (NOISE_SIGMAS standard deviations): position error of the pair, plus the velocity errors
    # carried over the dead-reckoning lead and out to the CPA
    sigma_v_a, sigma_v_b = _velocity_error_kn(r["sog"][ia]), _velocity_error_kn(r["sog"][ib])
    sigma_w = np.hypot(sigma_v_a, sigma_v_b)
    sigma_pos = np.sqrt(2.0) * GPS_NOISE_M / METERS_PER_NM
    cpa_band = NOISE_SIGMAS * (sigma_pos + sigma_v_a * lead_a + sigma_v_b * lead_b + sigma_w * np.abs(tcpa))
    tcpa_band = NOISE_SIGMAS * (sigma_pos + sigma_w * np.abs(tcpa)) / np.maximum(speed, 1e-6)
    horizon = ENCOUNTER_TCPA_MINUTES / 60.0
    strict = (cpa <= ENCOUNTER_CPA_NM) & (tcpa >= 0) & (tcpa <= horizon) & (cpa_s < until)
    loose = (cpa <= ENCOUNTER_CPA_NM + cpa_band) & (tcpa >= -tcpa_band) & (tcpa <= horizon + tcpa_band)
    loose &= cpa_s < until + STOP_BAND_S
    tight = (cpa <= ENCOUNTER_CPA_NM - cpa_band) & (tcpa >= tcpa_band) & (tcpa <= horizon - tcpa_band) & (cpa_s < until)
    course_a, course_b = r["cog"][ia], r["cog"][ib]
    situation = colreg_situation(course_a, course_b, bearing)
    # the situation noise could change: COG +-COG_NOISE_DEG on each course, the horizon bearing by the
    # relative velocity's error over the relative speed (a slow overtaking's bearing is the least sure)
    bearing_band = np.degrees(np.arctan2(NOISE_SIGMAS * sigma_w, speed))
    flips = np.zeros(cpa.size, dtype=bool)
    for da in (-COG_NOISE_DEG, 0.0, COG_NOISE_DEG):
        for db in (-COG_NOISE_DEG, 0.0, COG_NOISE_DEG):
            for dbear in (-1.0, 0.0, 1.0):
                flips |= colreg_situation(course_a + da, course_b + db, bearing + dbear * bearing_band) != situation
    return pd.DataFrame({"a": r["vessel"][ia], "b": r["vessel"][ib], "bucket": r["bucket"][ia], "cpa": cpa, "cpa_band": cpa_band,
                         "cpa_s": np.round(cpa_s).astype(np.int64), "situation": situation, "situation_flips": flips,
                         "strict": strict, "loose": loose, "tight": tight})  # fmt: skip


def _approach_numbers(frame: pd.DataFrame) -> np.ndarray:
    """As the detector: a pair's flagged bucket continues its previous approach when it is the next bucket
    or predicts a CPA within one bucket length of the previous one's."""
    a, b, bucket, cpa_s = (frame[c].to_numpy() for c in ("a", "b", "bucket", "cpa_s"))
    same_pair = np.r_[False, (a[1:] == a[:-1]) & (b[1:] == b[:-1])]
    goes_on = same_pair & (
        (np.diff(bucket, prepend=0) <= 1) | (np.abs(np.diff(cpa_s, prepend=0)) <= ENCOUNTER_BUCKET_MINUTES * 60)
    )
    return np.cumsum(~goes_on)


def encounters_truth(phases, rows, fleet: list[Vessel], planted, span_s: int, start_epoch_s: int) -> pd.DataFrame:
    """Every approach meeting the contract's close-encounter definition on the noiseless tracks.

    The definition applied to the vessels' real motion: in each time bucket, each valid vessel's first
    usable report while truly under way at >= ENCOUNTER_MIN_SOG_KN speaks for it with its true position,
    speed and course at that report's time; the earlier of a pair is dead-reckoned to the later, and the
    pair is flagged when the CPA is <= ENCOUNTER_CPA_NM with 0 <= TCPA <= ENCOUNTER_TCPA_MINUTES and
    both vessels are still under way at the CPA (a CPA predicted for after one has anchored, moored or
    slowed below the minimum is no close-quarters situation). Flagged buckets of a pair merge into one
    approach as in the detector; it keeps its smallest CPA, that sample's CPA time and COLREG situation.

    Noise (GPS, SOG, COG) decides pairs near the limits, so each row says whether it is `borderline`:
    no sample of it meets the definition with a margin of NOISE_SIGMAS standard deviations of the
    reported values' error (CPA, TCPA and the stop time alike). Near misses that fail the definition
    only within that margin are listed too, as borderline rows (a detector may report them or not).
    `situation_borderline`: the COLREG rule could give another situation within the noise, or another
    sample of the approach with a CPA within the noise band of the closest gives another situation.
    """
    columns = ["vessel_a", "vessel_b", "situation", "cpa_s", "cpa_nm", "planted", "borderline", "situation_borderline"]
    kin = _Kinematics(phases, fleet)
    reports = _bucket_reports(rows, fleet, kin, start_epoch_s)
    ia, ib = _bucket_pairs(reports)
    samples = _samples(reports, ia, ib)
    samples = samples[samples["loose"]].sort_values(["a", "b", "bucket"], kind="stable").reset_index(drop=True)
    if samples.empty:
        return pd.DataFrame(columns=columns)
    samples["loose_no"] = _approach_numbers(samples)
    found = []
    for _, near in samples.groupby("loose_no", sort=False):
        strict = near[near["strict"]]
        if strict.empty:  # a near miss the noise can tip in
            groups, borderline = [near], [True]
        else:
            numbers = _approach_numbers(strict)
            groups = [g for _, g in strict.groupby(numbers, sort=False)]
            borderline = [not g["tight"].any() for g in groups]
        for group, edge in zip(groups, borderline):
            best = group.loc[group["cpa"].idxmin()]
            close = group[group["cpa"] <= best["cpa"] + best["cpa_band"]]
            found.append({"vessel_a": best["a"], "vessel_b": best["b"], "situation": best["situation"], "cpa_s": best["cpa_s"],
                          "cpa_nm": best["cpa"], "borderline": edge,
                          "situation_borderline": bool(best["situation_flips"] or (close["situation"] != best["situation"]).any())})  # fmt: skip
    approaches = pd.DataFrame(found)
    planted_times: dict[tuple[int, int], list[int]] = {}
    for pa, pb, cpa_s, _ in planted:
        planted_times.setdefault((min(pa, pb), max(pa, pb)), []).append(cpa_s)
    approaches["planted"] = [
        any(abs(c - s) <= 300 for s in planted_times.get((va, vb), []))
        for va, vb, c in zip(approaches["vessel_a"], approaches["vessel_b"], approaches["cpa_s"])
    ]
    return approaches[columns].reset_index(drop=True)


# --- truth frames as written -----------------------------------------------------------------


def _times_or_empty(start: np.datetime64, seconds) -> list[str]:
    values = pd.Series(seconds, dtype=float).to_numpy()
    known = ~np.isnan(values)
    text = np.full(values.size, "", dtype=object)
    text[known] = _timestamps(start, values[known].astype(np.int64))
    return text.tolist()


def _mmsi(fleet: list[Vessel], vessel) -> np.ndarray:
    return np.array([v.mmsi for v in fleet], dtype=np.int64)[np.asarray(vessel, dtype=np.int64)]


def _sorted_frame(data: dict, columns: tuple[str, ...], by: list[str]) -> pd.DataFrame:
    return pd.DataFrame(data, columns=list(columns)).sort_values(by, kind="stable").reset_index(drop=True)


def _round_text(values, digits: int) -> list[str]:
    return [f"{x:.{digits}f}" for x in np.asarray(values, dtype=float)]


def truth_frames(truth: dict, fleet: list[Vessel], ports: pd.DataFrame, start: np.datetime64) -> dict[str, pd.DataFrame]:
    """The ground_truth_<name>.csv contents of the facts contract, from the simulator's truth records."""
    locode = ports["locode"].to_numpy()
    stays, voyages, loiters = truth["port_stays"], truth["voyages"], truth["loitering"]
    speed, conflicts, encounters = truth["speed_anomalies"], truth["identity_conflicts"], truth["encounters"]
    traffic, movement, jumps = truth["traffic"], truth["movement"], truth["jumps"]
    lo, hi = np.minimum(encounters["vessel_a"], encounters["vessel_b"]), np.maximum(encounters["vessel_a"], encounters["vessel_b"])
    mmsi_a, mmsi_b = _mmsi(fleet, encounters["vessel_a"]), _mmsi(fleet, encounters["vessel_b"])
    swap = mmsi_a > mmsi_b
    epoch = np.datetime64(0, "s")
    return {
        "port_stays": _sorted_frame(
            {"mmsi": _mmsi(fleet, stays["vessel"]), "locode": locode[stays["port"].to_numpy(dtype=np.int64)], "kind": stays["kind"],
             "start": _timestamps(start, stays["start"].to_numpy()), "end": _timestamps(start, stays["end"].to_numpy()),
             "truncated": _bool_text(stays["truncated"])},
            PORT_STAY_COLUMNS, ["mmsi", "start"],
        ),
        "voyages": _sorted_frame(
            {"mmsi": _mmsi(fleet, voyages["vessel"]),
             "from_locode": locode[np.asarray(truth["call_ports"])[voyages["from_call"].to_numpy(dtype=np.int64)]],
             "to_locode": locode[np.asarray(truth["call_ports"])[voyages["to_call"].to_numpy(dtype=np.int64)]],
             "departure": _times_or_empty(start, voyages["departure"]), "arrival": _times_or_empty(start, voyages["arrival"]),
             "truncated": _bool_text(voyages["truncated"]), "_order": voyages["to_call"]},
            VOYAGE_COLUMNS + ("_order",), ["mmsi", "_order"],
        ).drop(columns="_order"),
        "loitering": _sorted_frame(
            {"mmsi": _mmsi(fleet, loiters["vessel"]), "start": _timestamps(start, loiters["start"].to_numpy()),
             "end": _timestamps(start, loiters["end"].to_numpy()), "center_lat": _round_text(loiters["center_lat"], 5),
             "center_lon": _round_text(loiters["center_lon"], 5)},
            LOITERING_COLUMNS, ["mmsi", "start"],
        ),
        "speed_anomalies": _sorted_frame(
            {"mmsi": _mmsi(fleet, speed["vessel"]), "vessel_type_code": speed["vessel_type_code"],
             "start": _timestamps(start, speed["start"].to_numpy()), "end": _timestamps(start, speed["end"].to_numpy()),
             "max_sog_kn": _round_text(speed["max_sog_kn"], 1)},
            SPEED_ANOMALY_COLUMNS, ["mmsi", "start"],
        ),
        "identity_conflicts": _sorted_frame(
            {"mmsi": _mmsi(fleet, [c["vessel"] for c in conflicts]),
             "start": _timestamps(start, np.array([c["start"] for c in conflicts], dtype=np.int64)),
             "end": _timestamps(start, np.array([c["end"] for c in conflicts], dtype=np.int64)),
             **{k: _round_text([c[k] for c in conflicts], 5) for k in ("lat_a", "lon_a", "lat_b", "lon_b")}},
            IDENTITY_CONFLICT_COLUMNS, ["mmsi", "start"],
        ),
        "jumps": _sorted_frame(
            {"mmsi": _mmsi(fleet, jumps["vessel"]), "ts": _timestamps(start, jumps["t"].to_numpy())}, JUMP_COLUMNS, ["mmsi", "ts"]
        ),
        "encounters": _sorted_frame(
            {"mmsi_a": np.where(swap, mmsi_b, mmsi_a), "mmsi_b": np.where(swap, mmsi_a, mmsi_b),
             "situation": encounters["situation"], "cpa_time": _timestamps(start, encounters["cpa_s"].to_numpy(dtype=np.int64)),
             "cpa_nm": _round_text(encounters["cpa_nm"], 3), "planted": _bool_text(encounters["planted"]),
             "borderline": _bool_text(encounters["borderline"]), "situation_borderline": _bool_text(encounters["situation_borderline"])},
            ENCOUNTER_COLUMNS, ["mmsi_a", "mmsi_b", "cpa_time"],
        ) if len(lo) else pd.DataFrame(columns=list(ENCOUNTER_COLUMNS)),
        "traffic": _sorted_frame(
            {"hour": _timestamps(epoch, traffic["hour"].to_numpy(dtype=np.int64) * 3600), "cell_lat_idx": traffic["cell_lat_idx"],
             "cell_lon_idx": traffic["cell_lon_idx"], "vessel_type_code": traffic["vessel_type_code"], "vessels": traffic["vessels"]},
            TRAFFIC_COLUMNS, ["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code"],
        ),
        "movement": _sorted_frame(
            {"mmsi": _mmsi(fleet, movement["vessel"]), "window_start": _timestamps(epoch, movement["window_start"].to_numpy(dtype=np.int64)),
             "distance_nm": _round_text(movement["distance_nm"], 4),
             **{k: _round_text(movement[k], 2) for k in ("minutes_underway", "minutes_moored", "minutes_anchored")},
             "major_course_changes": movement["major_course_changes"]},
            MOVEMENT_COLUMNS, ["mmsi", "window_start"],
        ),
    }


# --- writing --------------------------------------------------------------------------------


def _timestamps(start: np.datetime64, seconds: np.ndarray) -> list[str]:
    return np.datetime_as_string(start + seconds.astype("timedelta64[s]"), unit="s").tolist()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def noaa_csv_text(rows, copies: np.ndarray, fleet: list[Vessel], start: np.datetime64) -> str:
    order = np.lexsort((np.array([v.mmsi for v in fleet])[rows["vessel"]], rows["t"]))
    order = np.repeat(order, copies[order])
    vessel = rows["vessel"][order]
    identity = np.array([f"{v.mmsi}" for v in fleet], dtype=object)
    described = np.array([f"{v.name},{v.imo},{v.call_sign},{v.type_code}" for v in fleet], dtype=object)
    particulars = np.array(
        [
            f"{v.length},{'' if v.width is None else v.width},{'' if v.draft is None else f'{v.draft:.1f}'},"
            f"{'' if v.class_b else v.type_code},{'B' if v.class_b else 'A'}"
            for v in fleet
        ],
        dtype=object,
    )
    class_b = np.array([v.class_b for v in fleet])[vessel]
    status = np.where(class_b, "", rows["status"][order].astype(str)).tolist()
    lines = [
        f"{m},{ts},{la:.5f},{lo:.5f},{s:.1f},{c:.1f},{h},{d},{st},{p}"
        for m, ts, la, lo, s, c, h, d, st, p in zip(
            identity[vessel].tolist(),
            _timestamps(start, rows["t"][order]),
            rows["lat"][order].tolist(),
            rows["lon"][order].tolist(),
            rows["sog"][order].tolist(),
            rows["cog"][order].tolist(),
            rows["heading"][order].tolist(),
            described[vessel].tolist(),
            status,
            particulars[vessel].tolist(),
        )
    ]
    return ",".join(NOAA_COLUMNS) + "\n" + "\n".join(lines) + ("\n" if lines else "")


def _bool_text(values) -> list[str]:
    return ["true" if bool(v) else "false" for v in values]


def port_calls_frame(truth: pd.DataFrame, fleet: list[Vessel], ports: pd.DataFrame, start) -> pd.DataFrame:
    mmsi = np.array([v.mmsi for v in fleet])[truth["vessel"].to_numpy()]
    frame = pd.DataFrame(
        {
            "mmsi": mmsi,
            "locode": ports["locode"].to_numpy()[truth["port"].to_numpy()],
            "port_name": ports["port_name"].to_numpy()[truth["port"].to_numpy()],
            "arrival": _timestamps(start, truth["arrival"].to_numpy()),
            "departure": _timestamps(start, truth["departure"].to_numpy()),
            "anchored_minutes": [f"{m:.2f}" for m in truth["anchored_minutes"]],
            "truncated": _bool_text(truth["truncated"]),
            "_t": truth["arrival"].to_numpy(),
        }
    )
    return frame.sort_values(["mmsi", "_t"], kind="stable").drop(columns="_t")[list(PORT_CALL_COLUMNS)]


def gaps_frame(gaps: list[tuple[int, int, int]], fleet: list[Vessel], start) -> pd.DataFrame:
    vessel = np.array([g[0] for g in gaps], dtype=np.int64)
    begin = np.array([g[1] for g in gaps], dtype=np.int64)
    end = np.array([g[2] for g in gaps], dtype=np.int64)
    frame = pd.DataFrame(
        {
            "mmsi": np.array([v.mmsi for v in fleet], dtype=np.int64)[vessel],
            "gap_start": _timestamps(start, begin),
            "gap_end": _timestamps(start, end),
            "minutes": [f"{m:.2f}" for m in (end - begin) / 60.0],
        },
        columns=list(GAP_COLUMNS),
    )
    return frame.sort_values(["mmsi"], kind="stable")


def vessels_frame(fleet: list[Vessel], ports: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "mmsi": [v.mmsi for v in fleet],
            "name": [v.name for v in fleet],
            "vessel_type": [v.kind.name for v in fleet],
            "vessel_type_code": [v.type_code for v in fleet],
            "transceiver_class": ["B" if v.class_b else "A" for v in fleet],
            "length": [v.length for v in fleet],
            "width": ["" if v.width is None else str(v.width) for v in fleet],
            "draft": ["" if v.draft is None else f"{v.draft:.1f}" for v in fleet],
            "home_port": [ports.at[v.home, "locode"] for v in fleet],
            "valid_mmsi": _bool_text(v.valid_mmsi for v in fleet),
        },
        columns=list(VESSEL_COLUMNS),
    )
    return frame.sort_values("mmsi", kind="stable")


def _start_time(cfg: SimulateConfig) -> np.datetime64:
    start = cfg.start
    if start.tzinfo is not None:
        start = start.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(start, "s")


def _check_config(cfg: SimulateConfig) -> None:
    for name in ("gap_minutes", "loiter_minutes", "identity_conflict_minutes"):
        low, high = getattr(cfg, name)
        if not 0 < low <= high:
            raise ConfigError(f"simulate.{name} must be (shortest, longest) with 0 < shortest <= longest; got {getattr(cfg, name)}")
    if cfg.loiter_minutes[0] < LOITER_MIN_MINUTES + 10:
        raise ConfigError(
            f"simulate.loiter_minutes must start at >= {LOITER_MIN_MINUTES + 10:g} so a planted drift's reports span the "
            f"{LOITER_MIN_MINUTES:g} min that make it loitering; got {cfg.loiter_minutes}"
        )


def simulate(cfg: SimulateConfig, ports: pd.DataFrame, out_dir: Path) -> SimulationResult:
    """Simulate `cfg.vessels` vessels (+ invalid-MMSI extras) for `cfg.hours` from `cfg.start`."""
    _check_config(cfg)
    ports = check_ports(ports)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    span_s = int(round(cfg.hours * 3600))
    start = _start_time(cfg)

    harbour = build_harbour(ports, rng)
    fleet = build_fleet(cfg, harbour, rng)
    # each planted kind draws from its own stream, so switching one off leaves the others as they were
    loiter_rng, encounter_rng, spike_rng, glitch_rng, twin_rng = rng.spawn(5)
    plan = EditablePlan(plan_voyages(fleet, harbour, span_s, rng), len(fleet))
    loiters = plant_loiters(plan, fleet, harbour, cfg, span_s, loiter_rng)
    encounters = plant_encounters(plan, fleet, harbour, cfg, span_s, encounter_rng)
    phases = plan.table()
    rows = sample_reports(phases, fleet, span_s, rng)
    rows, gaps = plant_gaps(rows, phases, harbour, cfg, span_s, rng, plan.busy)
    calls = port_call_truth(rows, phases, np.asarray(plan.call_ports), fleet, span_s)
    stays = port_stays_truth(rows, phases, calls)
    voyages = voyages_truth(calls, phases, rows, fleet)

    busy = plan.busy
    for v, before, after in gaps:
        busy[v].append((before - BUSY_MARGIN_S, after + BUSY_MARGIN_S))
    spikes = plant_position_spikes(rows, phases, fleet, harbour, cfg, busy, spike_rng)
    glitches = plant_speed_glitches(rows, phases, fleet, harbour, cfg, busy, glitch_rng)
    jumps = pd.DataFrame({"vessel": rows["vessel"][spikes], "t": rows["t"][spikes]})
    rows, conflicts = plant_identity_conflicts(rows, phases, fleet, cfg, span_s, busy, twin_rng)

    protected = _ground_truth_reports(rows, calls, gaps) | _ground_truth_reports(
        rows, pd.DataFrame({"vessel": stays["vessel"], "arrival": stays["start"], "departure": stays["end"]}), []
    )
    protected |= rows["origin"] != ROW_NORMAL
    for v, begin, end in loiters:
        protected |= (rows["vessel"] == v) & (rows["t"] >= begin) & (rows["t"] <= end)
    for conflict in conflicts:
        protected |= (rows["vessel"] == conflict["vessel"]) & (rows["t"] >= conflict["guard"][0]) & (rows["t"] <= conflict["guard"][1])
    for glitch in glitches:
        protected[glitch] = True
    protected[np.clip(np.concatenate([np.asarray(spikes, dtype=np.int64) + d for d in (-1, 1)]), 0, rows["t"].size - 1)] = True
    rows, copies = soil_rows(rows, protected, cfg, rng)

    start_epoch_s = int((start - np.datetime64(0, "s")).astype(np.int64))
    truth = {
        "call_ports": plan.call_ports,
        "port_stays": stays,
        "voyages": voyages,
        "loitering": loitering_truth(rows, fleet, phases, harbour),
        "speed_anomalies": speed_anomalies_truth(rows, fleet),
        "identity_conflicts": conflicts,
        "jumps": jumps,
        "encounters": encounters_truth(phases, rows, fleet, encounters, span_s, start_epoch_s),
        "traffic": traffic_truth(rows, fleet, start_epoch_s),
        "movement": movement_truth(rows, phases, fleet, start_epoch_s),
    }

    result = SimulationResult(
        csv_path=out_dir / "ais.csv",
        port_calls_path=out_dir / "ground_truth_port_calls.csv",
        gaps_path=out_dir / "ground_truth_gaps.csv",
        vessels_path=out_dir / "vessels.csv",
        rows=int(copies.sum()),
        vessels=len(fleet),
        truth_paths={name: out_dir / f"ground_truth_{name}.csv" for name in TRUTH_NAMES},
    )
    _write_atomic(result.csv_path, noaa_csv_text(rows, copies, fleet, start))
    _write_atomic(result.port_calls_path, _csv_text(port_calls_frame(calls, fleet, ports, start)))
    _write_atomic(result.gaps_path, _csv_text(gaps_frame(gaps, fleet, start)))
    _write_atomic(result.vessels_path, _csv_text(vessels_frame(fleet, ports)))
    for name, frame in truth_frames(truth, fleet, ports, start).items():
        _write_atomic(result.truth_paths[name], _csv_text(frame))
    return result


# Plain function above; this wrapper is the Prefect task boundary. No retries: it is offline and
# deterministic. No cache: the files in out_dir are the artifact.
simulate_ais_task = task(name="simulate-ais", cache_policy=NO_CACHE)(simulate)
