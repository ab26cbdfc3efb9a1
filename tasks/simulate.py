"""Deterministic AIS simulator: the project's default data source.

`simulate` plans voyages for a fleet (moored stays, anchorage waits, port-to-port legs, short
round trips for tugs, fishing and pleasure craft), samples AIS position reports from them, plants
AIS gaps and the dirty values real NOAA feeds carry, and writes into out_dir:

- ais.csv                    NOAA MarineCadastre CSV (17 columns), sorted by BaseDateTime, MMSI
- ground_truth_port_calls.csv  mmsi,locode,port_name,arrival,departure,anchored_minutes,truncated
- ground_truth_gaps.csv      mmsi,gap_start,gap_end,minutes
- vessels.csv                mmsi,name,vessel_type,vessel_type_code,transceiver_class,length,width,
                             draft,home_port,valid_mmsi

Same SimulateConfig and port table, same bytes (numpy default_rng(cfg.seed) is the only source of
randomness). Legs are straight great-circle lines between harbour points, so they can cross land;
anchorages and offshore turning points are placed by bearing only, so a few lie on land too.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import SimulateConfig
from tasks.errors import ConfigError, InputError
from tasks.geo import bearing_deg, destination, distance_nm, great_circle_points
from tasks.ports import check_ports
from tasks.sources.raw import NOAA_COLUMNS

PORT_CALL_COLUMNS = ("mmsi", "locode", "port_name", "arrival", "departure", "anchored_minutes", "truncated")
GAP_COLUMNS = ("mmsi", "gap_start", "gap_end", "minutes")
VESSEL_COLUMNS = (
    "mmsi", "name", "vessel_type", "vessel_type_code", "transceiver_class", "length", "width", "draft",
    "home_port", "valid_mmsi",
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
TRAWL_SPEED_KN = (2.0, 4.0)
TRAWL_HOURS = (1.0, 3.0)
PRE_ROLL_HOURS = 36.0  # voyages start up to this long before cfg.start, so vessels enter mid-voyage
GAP_MARGIN_S = 600  # a gap starts and ends at least this far inside an underway spell
GAP_PLACEMENT_TRIES = 20

MOORED, ANCHORED, SHIFT, LEG, TRAWL = range(5)
STOPPED_PHASES = (MOORED, ANCHORED)
UNDERWAY_SPELL_PHASES = (LEG, TRAWL)  # SHIFT belongs to a port call and never hosts a gap


@dataclass(frozen=True)
class SimulationResult:
    csv_path: Path
    port_calls_path: Path
    gaps_path: Path
    vessels_path: Path
    rows: int  # data rows in ais.csv, duplicates included
    vessels: int  # vessels in vessels.csv, invalid-MMSI ones included


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
    }


def _take(rows: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in rows.items()}


def plant_gaps(rows, phases, harbour: Harbour, cfg: SimulateConfig, span_s: int, rng) -> tuple[dict, list[tuple[int, int, int]]]:
    """Take `gap_vessel_share` of valid vessels dark once inside an underway spell; returns kept rows and gaps.

    The reports bounding a gap lie over OTHER_PORT_CLEARANCE_NM from every port, so a gap never
    hides a vessel leaving or entering a port's 3 nm (two calls would read as one).
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
    truncated = (
        (extent["begin"].to_numpy() < 0)
        | (extent["end"].to_numpy() > span_s)
        | (calls["arrival"].to_numpy() == seen.loc[vessel, "min"].to_numpy())
        | (calls["departure"].to_numpy() == seen.loc[vessel, "max"].to_numpy())
    )
    anchored = (calls["anchored_last"] - calls["anchored_first"]).fillna(0.0) / 60.0
    return pd.DataFrame(
        {
            "vessel": vessel,
            "port": calls_port[calls.index.to_numpy()],
            "arrival": calls["arrival"].to_numpy().astype(np.int64),
            "departure": calls["departure"].to_numpy().astype(np.int64),
            "anchored_minutes": anchored.to_numpy(),
            "truncated": truncated,
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
    low, high = cfg.gap_minutes
    if not 0 < low <= high:
        raise ConfigError(f"simulate.gap_minutes must be (shortest, longest) with 0 < shortest <= longest; got {cfg.gap_minutes}")


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
    plan = plan_voyages(fleet, harbour, span_s, rng)
    phases = plan.table()
    rows = sample_reports(phases, fleet, span_s, rng)
    rows, gaps = plant_gaps(rows, phases, harbour, cfg, span_s, rng)
    calls = port_call_truth(rows, phases, np.asarray(plan.call_ports), fleet, span_s)

    rows, copies = soil_rows(rows, _ground_truth_reports(rows, calls, gaps), cfg, rng)

    result = SimulationResult(
        csv_path=out_dir / "ais.csv",
        port_calls_path=out_dir / "ground_truth_port_calls.csv",
        gaps_path=out_dir / "ground_truth_gaps.csv",
        vessels_path=out_dir / "vessels.csv",
        rows=int(copies.sum()),
        vessels=len(fleet),
    )
    _write_atomic(result.csv_path, noaa_csv_text(rows, copies, fleet, start))
    _write_atomic(result.port_calls_path, _csv_text(port_calls_frame(calls, fleet, ports, start)))
    _write_atomic(result.gaps_path, _csv_text(gaps_frame(gaps, fleet, start)))
    _write_atomic(result.vessels_path, _csv_text(vessels_frame(fleet, ports)))
    return result


# Plain function above; this wrapper is the Prefect task boundary. No retries: it is offline and
# deterministic. No cache: the files in out_dir are the artifact.
simulate_ais_task = task(name="simulate-ais", cache_policy=NO_CACHE)(simulate)
