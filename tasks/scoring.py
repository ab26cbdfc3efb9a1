"""Score a detector's output against the simulator's ground truth (the facts contract's scoring rule).

Pure pandas, no I/O: each `score_<fact>(detected, truth, columns=None)` takes the detector's output
frame and the ground_truth_<fact>.csv frame and returns a Score. Detector columns are expected
under the contract's names (mmsi, start, end, locode, kind, from_locode, to_locode, departure,
arrival, mmsi_a, mmsi_b, situation, cpa_time, cpa_nm, hour, cell_lat_idx, cell_lon_idx,
vessel_type_code, vessels, window_start, distance_nm, minutes_underway, minutes_moored,
minutes_anchored, major_course_changes); `columns` maps a contract name to the detector's own name
(e.g. {"start": "gap_start"}) when they differ.

Rule: interval events match when the keys are equal and |start difference| and |end difference|
are each <= INTERVAL_TOLERANCE; encounters on the unordered pair, equal situation and |cpa_time
difference| <= ENCOUNTER_TOLERANCE; traffic rows on equal (hour, cell, type, vessels); movement
rows on (mmsi, window_start) with distance, minutes and course changes within tolerance. Matching is
one to one: candidate pairs are taken closest first, each row at most once. Truth rows marked
truncated (cut by the data's edges) and the detected rows they match are left out of both sides;
so are detected rows the detector itself marks truncated. Precision = matched / detected, recall =
matched / truth (1.0 when the side is empty), F1 their harmonic mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.errors import InputError

# Reports come every 2-3 minutes and the simulator's truth times are report times, so a detector that
# follows the definition is off by a report or two at most; 10 minutes also absorbs one report lost
# to a not-available value at an event's edge.
INTERVAL_TOLERANCE = pd.Timedelta(minutes=10)
# CPA time is a prediction from noisy SOG/COG (+-0.2 kn, +-2 deg): minutes of error 20 min ahead.
ENCOUNTER_TOLERANCE = pd.Timedelta(minutes=5)
JUMP_TOLERANCE = pd.Timedelta(minutes=1)  # a jump is one report: its own timestamp
MOVEMENT_DISTANCE_SHARE = 0.05  # distance within 5 % of the truth ...
MOVEMENT_DISTANCE_NM = 0.1  # ... or within 0.1 nm, whichever is larger
MOVEMENT_MINUTES = 6.0  # minutes underway / moored / anchored, each
EPSILON = 1e-9  # values at exactly a tolerance match although decimal text rounds to binary (1.1 - 1.0 > 0.1)

SITUATIONS = ("head_on", "crossing", "overtaking")


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    tp: int  # matched pairs
    fp: int  # detected rows left unmatched
    fn: int  # truth rows left unmatched

    @classmethod
    def from_counts(cls, tp: int, detected: int, truth: int) -> Score:
        precision = tp / detected if detected else 1.0
        recall = tp / truth if truth else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return cls(precision, recall, f1, tp, detected - tp, truth - tp)


# --- input checks ---------------------------------------------------------------------------


def _renamed(frame: pd.DataFrame, columns: dict[str, str] | None, needed: list[str], what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    frame = frame.rename(columns={theirs: ours for ours, theirs in (columns or {}).items()})
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns)) or 'none'}); "
            "rename them or pass columns={contract_name: your_name}"
        )
    return frame.reset_index(drop=True)


def _times(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC; text, datetimes and tz-aware values all accepted, empty text is NaT."""
    times = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    return times.dt.tz_convert(None).astype("datetime64[ns]")


def _flags(values: pd.Series) -> pd.Series:
    if values.dtype == bool:
        return values
    return values.astype(str).str.strip().str.lower().isin(["true", "1", "t", "yes"])


# --- one-to-one matching --------------------------------------------------------------------


def _match_one_to_one(pairs: pd.DataFrame) -> pd.DataFrame:
    """Greedy one-to-one matching of candidate pairs (columns d, t, cost), lowest cost first."""
    used_d: set[int] = set()
    used_t: set[int] = set()
    keep = []
    for d, t in pairs.sort_values(["cost", "d", "t"], kind="stable")[["d", "t"]].itertuples(index=False):
        if d not in used_d and t not in used_t:
            used_d.add(d)
            used_t.add(t)
            keep.append((d, t))
    return pd.DataFrame(keep, columns=["d", "t"], dtype=np.int64)


def _interval_pairs(detected: pd.DataFrame, truth: pd.DataFrame, keys: list[str], tolerance: pd.Timedelta) -> pd.DataFrame:
    left = detected[keys + ["start", "end"]].assign(d=np.arange(len(detected)))
    right = truth[keys + ["start", "end", "truncated"]].assign(t=np.arange(len(truth)))
    pairs = left.merge(right, on=keys, suffixes=("_d", "_t"))
    d_start = (pairs["start_d"] - pairs["start_t"]).abs()
    d_end = (pairs["end_d"] - pairs["end_t"]).abs()
    # a truncated truth row may lack the time the data cannot show: that side matches anything
    start_ok = (d_start <= tolerance) | (pairs["truncated"] & pairs["start_t"].isna())
    end_ok = (d_end <= tolerance) | (pairs["truncated"] & pairs["end_t"].isna())
    pairs = pairs[start_ok & end_ok]
    cost = d_start[pairs.index].fillna(pd.Timedelta(0)) + d_end[pairs.index].fillna(pd.Timedelta(0))
    return pd.DataFrame({"d": pairs["d"], "t": pairs["t"], "cost": cost.dt.total_seconds()})


def score_intervals(
    detected: pd.DataFrame,
    truth: pd.DataFrame,
    keys: tuple[str, ...] = ("mmsi",),
    start: str = "start",
    end: str = "end",
    tolerance: pd.Timedelta = INTERVAL_TOLERANCE,
    columns: dict[str, str] | None = None,
) -> Score:
    """Generic interval-event score: same keys, |start diff| and |end diff| each <= tolerance."""
    keys = list(keys)
    detected = _renamed(detected, columns, keys + [start, end], "detected")
    truth = _renamed(truth, None, keys + [start, end], "truth")
    detected, truth = detected.rename(columns={start: "start", end: "end"}), truth.rename(columns={start: "start", end: "end"})
    for frame in (detected, truth):
        frame["start"], frame["end"] = _times(frame["start"]), _times(frame["end"])
        if "mmsi" in keys:
            frame["mmsi"] = pd.to_numeric(frame["mmsi"], errors="coerce").astype("Int64")
    truth["truncated"] = _flags(truth["truncated"]) if "truncated" in truth.columns else False
    detected_truncated = _flags(detected["truncated"]) if "truncated" in detected.columns else pd.Series(False, index=detected.index)
    matched = _match_one_to_one(_interval_pairs(detected, truth, keys, tolerance))
    matched_truncated = truth["truncated"].to_numpy()[matched["t"].to_numpy()] if len(matched) else np.zeros(0, dtype=bool)
    # left out of both sides: truncated truth rows, the detected rows matched to them, detected rows marked truncated
    excluded_d = set(matched["d"][matched_truncated].tolist()) | set(np.flatnonzero(detected_truncated.to_numpy()).tolist())
    tp = int(sum(1 for d, cut in zip(matched["d"], matched_truncated) if not cut and d not in excluded_d))
    return Score.from_counts(tp, len(detected) - len(excluded_d), int((~truth["truncated"]).sum()))


# --- one function per fact ------------------------------------------------------------------


def score_gaps(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """AIS gaps: truth columns mmsi, gap_start, gap_end (detector: start/end or gap_start/gap_end)."""
    truth = truth.rename(columns={"gap_start": "start", "gap_end": "end"})
    if columns is None and {"gap_start", "gap_end"} <= set(detected.columns):
        columns = {"start": "gap_start", "end": "gap_end"}
    return score_intervals(detected, truth, columns=columns)


def score_port_calls(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """Port calls: mmsi, locode, arrival, departure."""
    return score_intervals(detected, truth, ("mmsi", "locode"), "arrival", "departure", columns=columns)


def score_port_stays(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """Anchorage / berth stays: mmsi, locode, kind, start, end."""
    return score_intervals(detected, truth, ("mmsi", "locode", "kind"), columns=columns)


def score_voyages(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """Voyages: mmsi, from_locode, to_locode, departure, arrival."""
    return score_intervals(detected, truth, ("mmsi", "from_locode", "to_locode"), "departure", "arrival", columns=columns)


def score_loitering(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    return score_intervals(detected, truth, columns=columns)


def score_identity_conflicts(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    return score_intervals(detected, truth, columns=columns)


def score_speed_anomalies(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    return score_intervals(detected, truth, columns=columns)


def score_jumps(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """Impossible jumps: single reports, matched on mmsi and ts within JUMP_TOLERANCE."""
    detected = _renamed(detected, columns, ["mmsi", "ts"], "detected")
    detected, truth = detected.assign(end=detected["ts"]), truth.assign(end=truth["ts"])
    return score_intervals(detected, truth, start="ts", end="end", tolerance=JUMP_TOLERANCE)


def score_encounters(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """Close encounters: the unordered pair, equal situation, |cpa_time diff| <= ENCOUNTER_TOLERANCE.

    Truth rows the simulator marks `borderline` (noise decides whether the definition holds) are don't
    care: left out of the truth count, and a detection matching one (any situation) is left out of the
    detected count. A truth row marked `situation_borderline` accepts any situation. Matching prefers
    firm truth rows, then the closest CPA time.
    """
    needed = ["mmsi_a", "mmsi_b", "situation", "cpa_time"]
    detected, truth = _renamed(detected, columns, needed, "detected"), _renamed(truth, None, needed, "truth")
    sides = []
    for frame, tag in ((detected, "d"), (truth, "t")):
        a, b = (pd.to_numeric(frame[c], errors="coerce").astype("Int64") for c in ("mmsi_a", "mmsi_b"))
        sides.append(
            pd.DataFrame(
                {"low": np.minimum(a, b), "high": np.maximum(a, b), "situation": frame["situation"].astype(str).str.strip(),
                 "cpa_time": _times(frame["cpa_time"]), tag: np.arange(len(frame))}
            )  # fmt: skip
        )
    borderline = _flags(truth["borderline"]).to_numpy() if "borderline" in truth.columns else np.zeros(len(truth), dtype=bool)
    any_situation = borderline | (_flags(truth["situation_borderline"]).to_numpy() if "situation_borderline" in truth.columns else False)
    pairs = sides[0].merge(sides[1], on=["low", "high"], suffixes=("_d", "_t"))
    gap = (pairs["cpa_time_d"] - pairs["cpa_time_t"]).abs()
    t = pairs["t"].to_numpy()
    ok = (gap <= ENCOUNTER_TOLERANCE).to_numpy() & ((pairs["situation_d"] == pairs["situation_t"]).to_numpy() | any_situation[t])
    pairs, gap = pairs[ok], gap[ok]
    # firm truth first: a detection is spent on a borderline row only when no firm row wants it
    cost = gap.dt.total_seconds() + np.where(borderline[pairs["t"].to_numpy()], 1e6, 0.0)
    matched = _match_one_to_one(pd.DataFrame({"d": pairs["d"], "t": pairs["t"], "cost": cost}))
    on_borderline = borderline[matched["t"].to_numpy()] if len(matched) else np.zeros(0, dtype=bool)
    tp = int((~on_borderline).sum())
    return Score.from_counts(tp, len(detected) - int(on_borderline.sum()), int((~borderline).sum()))


TRAFFIC_KEYS = ["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code", "vessels"]


def score_traffic(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """Traffic density rows match on the exact (hour, cell_lat_idx, cell_lon_idx, vessel_type_code, vessels)."""
    detected, truth = _renamed(detected, columns, TRAFFIC_KEYS, "detected"), _renamed(truth, None, TRAFFIC_KEYS, "truth")
    counted = []
    for frame in (detected, truth):
        keyed = frame[TRAFFIC_KEYS].assign(hour=_times(frame["hour"]))
        for c in TRAFFIC_KEYS[1:]:
            keyed[c] = pd.to_numeric(keyed[c], errors="coerce").astype("Int64")
        counted.append(keyed.value_counts(dropna=False).rename("n"))
    both = pd.concat(counted, axis=1, keys=["d", "t"]).fillna(0)
    return Score.from_counts(int(np.minimum(both["d"], both["t"]).sum()), len(detected), len(truth))


MOVEMENT_VALUES = ["distance_nm", "minutes_underway", "minutes_moored", "minutes_anchored", "major_course_changes"]


def score_movement(detected: pd.DataFrame, truth: pd.DataFrame, columns: dict[str, str] | None = None) -> Score:
    """Movement windows match on (mmsi, window_start) when distance is within 5 % (or 0.1 nm), each
    minutes figure within MOVEMENT_MINUTES and the count of major course changes is equal."""
    needed = ["mmsi", "window_start"] + MOVEMENT_VALUES
    detected, truth = _renamed(detected, columns, needed, "detected"), _renamed(truth, None, needed, "truth")
    keyed = []
    for frame, tag in ((detected, "d"), (truth, "t")):
        part = frame[needed].assign(window_start=_times(frame["window_start"]), **{tag: np.arange(len(frame))})
        part["mmsi"] = pd.to_numeric(part["mmsi"], errors="coerce").astype("Int64")
        for c in MOVEMENT_VALUES:
            part[c] = pd.to_numeric(part[c], errors="coerce").astype(float)
        keyed.append(part)
    pairs = keyed[0].merge(keyed[1], on=["mmsi", "window_start"], suffixes=("_d", "_t"))
    distance_ok = (pairs["distance_nm_d"] - pairs["distance_nm_t"]).abs() <= np.maximum(
        MOVEMENT_DISTANCE_SHARE * pairs["distance_nm_t"].abs(), MOVEMENT_DISTANCE_NM
    ) + EPSILON
    minutes_ok = np.ones(len(pairs), dtype=bool)
    for c in ("minutes_underway", "minutes_moored", "minutes_anchored"):
        minutes_ok &= ((pairs[f"{c}_d"] - pairs[f"{c}_t"]).abs() <= MOVEMENT_MINUTES + EPSILON).to_numpy()
    turns_ok = pairs["major_course_changes_d"] == pairs["major_course_changes_t"]
    pairs = pairs[distance_ok.to_numpy() & minutes_ok & turns_ok.to_numpy()]
    matched = _match_one_to_one(pd.DataFrame({"d": pairs["d"], "t": pairs["t"], "cost": 0.0}))
    return Score.from_counts(len(matched), len(detected), len(truth))


SCORERS = {
    "gaps": score_gaps,
    "port_calls": score_port_calls,
    "port_stays": score_port_stays,
    "voyages": score_voyages,
    "loitering": score_loitering,
    "identity_conflicts": score_identity_conflicts,
    "speed_anomalies": score_speed_anomalies,
    "jumps": score_jumps,
    "encounters": score_encounters,
    "traffic": score_traffic,
    "movement": score_movement,
}
