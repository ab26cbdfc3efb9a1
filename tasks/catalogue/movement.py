"""Movement & kinematics (DESIGN.md category 2): speed statistics, distance run, major course
changes and time underway vs moored or at anchor per vessel window, from sql/vessel_movement.sql.

Every form of one window is asked on the same context (the window's reports, the ports that decide
whether a stopped report is at a berth or at anchor, and one line stating the fact's rules), so the
sampler can chain them into a dialogue."""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd

from tasks.catalogue.base import (
    CatalogueInputs, ContextSpec, FORMS, Form, Seed, Tracks, hhmm, iso, register_builder, register_form,
    seed_id, text_or_none, vessel_type_name,
)
from tasks.geo import distance_nm


def _values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    return {
        "max_sog_kn": f"{f['max_sog_kn']:.1f}", "mean_sog_kn": f"{f['mean_sog_kn']:.1f}",
        "distance_nm": f"{f['distance_nm']:.1f}", "n_speeds": str(f["n_speeds"]),
        "n_positions": str(f["n_positions"]), "n_legs": str(f["n_positions"] - 1),
    }


register_form(Form(
    "max_speed", "movement", "easy",
    questions=(
        "What was the highest speed over ground reported by {who} between {start} and {end} UTC on {day}?",
        "How fast did {who} go at most between {start} and {end} UTC?",
        "From these reports, what is the maximum SOG of {who} in the window {start}-{end} UTC?",
        "Between {start} and {end} UTC on {day}, what top speed did {who} report?",
    ),
    answers=(
        "The highest speed over ground reported by {who} between {start} and {end} UTC was {max_sog_kn} knots.",
        "{Who} reached a maximum of {max_sog_kn} knots over ground in that window.",
    ),
    reasoning=(
        "Scanning the sog_kn column of the {n_positions} reports for the largest value:",
        "Taking the largest of the reported speeds over ground:",
    ),
    values=_values, plant=("max_sog_kn", "number"),
))
register_form(Form(
    "mean_speed", "movement", "medium",
    questions=(
        "What was the average speed over ground of {who} between {start} and {end} UTC on {day}?",
        "Using the reports above, what mean speed did {who} keep from {start} to {end} UTC?",
        "Compute the mean SOG of {who} for {start}-{end} UTC.",
        "On average, how fast was {who} moving between {start} and {end} UTC?",
    ),
    answers=(
        "Averaging the {n_speeds} available speed reports, {who} kept a mean speed over ground of {mean_sog_kn} knots between {start} and {end} UTC.",
        "{Who} averaged {mean_sog_kn} knots over ground from {start} to {end} UTC (mean of {n_speeds} speed reports).",
    ),
    reasoning=(
        "Reports with SOG NA are left out; the mean is the sum of the {n_speeds} reported speeds divided by {n_speeds}.",
        "Adding up the {n_speeds} available SOG values and dividing by their count:",
    ),
    values=_values, plant=("mean_sog_kn", "number"),
))
register_form(Form(
    "distance_run", "movement", "hard",
    questions=(
        "How far did {who} travel between {start} and {end} UTC on {day}?",
        "What distance did {who} cover from {start} to {end} UTC, following its reported positions?",
        "Estimate the distance run by {who} in the window {start}-{end} UTC.",
        "Over {start}-{end} UTC, how many nautical miles did {who} sail?",
    ),
    answers=(
        "Summing the great-circle distances between its {n_positions} reports, {who} covered {distance_nm} nautical miles between {start} and {end} UTC.",
        "{Who} ran {distance_nm} nautical miles from {start} to {end} UTC, adding up the distances between consecutive reported positions.",
    ),
    reasoning=(
        "The distance run is the sum of the haversine distances between consecutive positions ({n_legs} legs), "
        "leaving out legs between two moored or anchored reports (position jitter, not distance run).",
        "Following the track report by report, each leg's great-circle length is added up, except legs with "
        "neither end underway.",
    ),
    values=_values, plant=("distance_nm", "number"),
))


MIN_STRAIGHT_WINDOWS = 10  # "no major course change" windows kept even where no window has one



def _turn_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    n = int(f["major_course_changes"])
    return {
        "major_course_changes": str(n), "changes_word": "change" if n == 1 else "changes",
        "turn_deg": f"{f['major_turn_deg']:.0f}", "stopped_kn": f"{f['stopped_max_sog_kn']:.1f}",
    }


def _state_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    span = (pd.Timestamp(f["last_seen"]) - pd.Timestamp(f["first_seen"])).total_seconds() / 60
    return {
        "minutes_underway": f"{f['minutes_underway']:.0f}", "minutes_moored": f"{f['minutes_moored']:.0f}",
        "minutes_anchored": f"{f['minutes_anchored']:.0f}", "span_minutes": f"{span:.0f}",
        "first_seen": hhmm(f["first_seen"]), "last_seen": hhmm(f["last_seen"]),
    }


register_form(Form(
    "course_changes", "movement", "medium",
    questions=(
        "How many major course changes did {who} make between {start} and {end} UTC on {day}?",
        "Count the major alterations of course by {who} in the window {start}-{end} UTC.",
        "Between {start} and {end} UTC, how many times did {who} change course sharply?",
        "Using the rule given with the reports, how many major course changes does the track of {who} show from {start} to {end} UTC?",
    ),
    answers=(
        "{Who} made {major_course_changes} major course {changes_word} between {start} and {end} UTC (COG changes of more than {turn_deg} degrees between consecutive moving reports).",
        "The track of {who} shows {major_course_changes} major course {changes_word} from {start} to {end} UTC.",
    ),
    reasoning=(
        "Comparing the COG of consecutive reports that are both moving faster than {stopped_kn} knots (reports with SOG or COG NA skipped), a change of more than {turn_deg} degrees counts as major.",
        "For each pair of consecutive moving reports, the smaller angle between their courses is taken; changes above {turn_deg} degrees are counted.",
    ),
    values=_turn_values, plant=("major_course_changes", "count"),
))
register_form(Form(
    "time_underway", "movement", "hard",
    questions=(
        "How long was {who} underway, and how long moored or at anchor, between {start} and {end} UTC on {day}?",
        "Split the time of {who} from {start} to {end} UTC into time underway, moored and at anchor.",
        "Between {start} and {end} UTC, how many minutes did {who} spend underway versus moored or anchored?",
        "Using the state rule given with the reports, how much of the window {start}-{end} UTC was {who} underway, moored and at anchor?",
    ),
    answers=(
        "{Who} was underway for {minutes_underway} minutes, moored for {minutes_moored} minutes and at anchor for {minutes_anchored} minutes between {first_seen} and {last_seen} UTC.",
        "Between its first and last reports ({first_seen} to {last_seen} UTC), {who} spent {minutes_underway} minutes underway, {minutes_moored} minutes moored and {minutes_anchored} minutes at anchor.",
    ),
    reasoning=(
        "Each report's state lasts until the next report, so the {span_minutes} minutes from the first report at {first_seen} to the last at {last_seen} UTC are split by state.",
        "Following the reports from {first_seen} to {last_seen} UTC, the time to the next report is added to the state of the earlier report.",
    ),
    values=_state_values, plant=("minutes_underway", "minutes"),
))


def movement_rule(params: dict[str, Any]) -> str | None:
    """The one line that lets a reader derive every movement fact of a window from its reports."""
    if not {"stopped_max_sog_kn", "port_radius_nm", "berth_radius_nm", "major_turn_deg"} <= set(params):
        return None
    stop, port, berth, turn = (params[k] for k in ("stopped_max_sog_kn", "port_radius_nm", "berth_radius_nm", "major_turn_deg"))
    return (
        f"Rules: a report is stopped at SOG <= {stop:g} kn (SOG NA: status at anchor or moored), otherwise underway; "
        f"a stopped report is moored if its status is moored, anchored if at anchor, otherwise moored within {berth:g} nm "
        f"of the nearest port, anchored within {port:g} nm, else underway (for such reports every port within {port:g} nm "
        f"is listed); a report with neither SOG nor status keeps the previous report's state, and a state lasts until "
        f"the next report. A major course change is a COG change of more than {turn:g} degrees between consecutive "
        f"reports both moving faster than {stop:g} kn (reports with SOG or COG NA skipped). Distance run adds the legs "
        f"between consecutive reports that have at least one end underway."
    )


# per run (Tracks object) and stopped speed: per vessel its report times, positions, and which
# reports are stopped with a status that says neither moored nor at anchor
_NEEDS_PORT: WeakKeyDictionary = WeakKeyDictionary()


def _needs_port(tracks: Tracks, mmsi: int, stopped_max_sog_kn: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cache = _NEEDS_PORT.setdefault(tracks, {})
    if (mmsi, stopped_max_sog_kn) not in cache:
        g = tracks.by_mmsi[mmsi]
        needs = ((g["sog_kn"] <= stopped_max_sog_kn) & ~g["nav_status"].isin([1, 5])).to_numpy()
        cache[(mmsi, stopped_max_sog_kn)] = (g["ts"].to_numpy(), g["lat"].to_numpy(), g["lon"].to_numpy(), needs)
    return cache[(mmsi, stopped_max_sog_kn)]


def _ports_to_list(tracks: Tracks, f: Any, params: dict[str, Any]) -> tuple[tuple[float, float], float] | None:
    """Where to list ports for a window: only a stopped report whose status says neither moored nor
    at anchor needs its distance to the nearest port; a circle round the first of them reaching
    port_radius_nm beyond the farthest of them holds every port any of them can be near."""
    if int(f.mmsi) not in tracks.by_mmsi:
        return None
    ts, lat, lon, needs = _needs_port(tracks, int(f.mmsi), float(params["stopped_max_sog_kn"]))
    lo = np.searchsorted(ts, np.datetime64(pd.Timestamp(f.window_start)), side="left")
    hi = np.searchsorted(ts, np.datetime64(pd.Timestamp(f.window_end)), side="left")
    at = lo + np.flatnonzero(needs[lo:hi])
    if not len(at):
        return None
    center = (float(lat[at[0]]), float(lon[at[0]]))
    spread = float(np.max(distance_nm(center[0], center[1], lat[at], lon[at])))
    return center, float(np.ceil((params["port_radius_nm"] + spread) * 10) / 10)


def _window_context(inputs: CatalogueInputs, f: Any, params: dict[str, Any], rule: str | None) -> ContextSpec:
    if rule is None:
        return ContextSpec("track", int(f.mmsi), iso(f.window_start), iso(f.window_end))
    ports = _ports_to_list(inputs.tracks, f, params)
    if ports is None:
        return ContextSpec("track", int(f.mmsi), iso(f.window_start), iso(f.window_end), extra=(("rule", rule),))
    return ContextSpec("track", int(f.mmsi), iso(f.window_start), iso(f.window_end), False, ports[0],
                       (("ports_radius_nm", ports[1]), ("rule", rule)))


def _has_mixed_states(fact: dict[str, Any]) -> bool:
    """Time underway vs stopped is asked where the window holds at least two states."""
    return sum(fact[k] >= 1.0 for k in ("minutes_underway", "minutes_moored", "minutes_anchored")) >= 2


@register_builder("movement")
def movement_candidates(inputs: CatalogueInputs) -> list[Seed]:
    facts = inputs.fact("vessel_movement")
    digest, params = inputs.fact_digests.get("vessel_movement", ""), inputs.fact_params.get("vessel_movement", {})
    rule = movement_rule(params)
    from tasks.validate import type_max_speeds  # here: tasks.validate imports the catalogue package

    limits = type_max_speeds()
    seeds, straight = [], []
    for f in facts.itertuples(index=False):
        if f.n_positions > inputs.cfg.max_context_records:
            continue
        vtype = vessel_type_name(f.vessel_type)
        # a speed faster than the type can go is a transponder glitch: the gate's plausibility check
        # would drop the answer that states it (the anomalies category asks about such speeds)
        limit_kn = limits.get(vtype, limits["any"])
        context = _window_context(inputs, f, params, rule)
        base = [
            {"name": "mmsi", "value": int(f.mmsi), "kind": "id", "required": False},
            {"name": "window_start", "value": iso(f.window_start), "kind": "time", "required": False},
            {"name": "window_end", "value": iso(f.window_end), "kind": "time", "required": False},
        ]
        fact: dict[str, Any] = {
            "n_positions": int(f.n_positions), "n_speeds": int(f.n_speeds),
            "mean_sog_kn": float(f.mean_sog_kn), "max_sog_kn": float(f.max_sog_kn),
            "distance_nm": float(f.distance_nm),
            "first_seen": iso(f.first_seen), "last_seen": iso(f.last_seen),
            "minutes_underway": float(f.minutes_underway), "minutes_moored": float(f.minutes_moored),
            "minutes_anchored": float(f.minutes_anchored), "major_course_changes": int(f.major_course_changes),
        }
        counts = [
            {"name": "n_positions", "value": fact["n_positions"], "kind": "count", "required": False},
            {"name": "n_speeds", "value": fact["n_speeds"], "kind": "count", "required": False},
            {"name": "n_legs", "value": fact["n_positions"] - 1, "kind": "count", "required": False},
        ]
        per_form = {
            "max_speed": [{"name": "max_sog_kn", "value": fact["max_sog_kn"], "kind": "speed_kn", "required": True}],
            "mean_speed": [{"name": "mean_sog_kn", "value": fact["mean_sog_kn"], "kind": "speed_kn", "required": True}],
            "distance_run": [{"name": "distance_nm", "value": fact["distance_nm"], "kind": "distance_nm", "required": True}],
        }
        for form, key in (("max_speed", "max_sog_kn"), ("mean_speed", "mean_sog_kn")):
            if fact[key] > limit_kn:
                del per_form[form]
        if rule is not None:
            fact |= {"major_turn_deg": float(params["major_turn_deg"]), "stopped_max_sog_kn": float(params["stopped_max_sog_kn"])}
            per_form["course_changes"] = [
                {"name": "major_course_changes", "value": fact["major_course_changes"], "kind": "count", "required": True},
                {"name": "major_turn_deg", "value": fact["major_turn_deg"], "kind": "degrees", "required": False,
                 "role": "threshold"},
                {"name": "stopped_max_sog_kn", "value": fact["stopped_max_sog_kn"], "kind": "speed_kn", "required": False,
                 "role": "threshold"},
            ]
            if _has_mixed_states(fact):
                span = (pd.Timestamp(f.last_seen) - pd.Timestamp(f.first_seen)).total_seconds() / 60
                per_form["time_underway"] = [
                    {"name": k, "value": fact[k], "kind": "minutes", "required": True}
                    for k in ("minutes_underway", "minutes_moored", "minutes_anchored")
                ] + [
                    {"name": "span_minutes", "value": span, "kind": "minutes", "required": False},
                    {"name": "first_seen", "value": fact["first_seen"], "kind": "time", "required": False},
                    {"name": "last_seen", "value": fact["last_seen"], "kind": "time", "required": False},
                ]
        region = inputs.region_at(int(f.mmsi), f.window_start, f.window_end)
        for form, values in per_form.items():
            spec = FORMS[form]
            seed = Seed(
                seed_id=seed_id(form, f.mmsi, f.window_start, f.source_hash),
                category=spec.category, difficulty=spec.difficulty, form=form, answerable=True,
                mmsi=int(f.mmsi), asked_mmsi=int(f.mmsi), vessel_name=text_or_none(f.vessel_name), vessel_type=vtype,
                window_start=iso(f.window_start), window_end=iso(f.window_end),
                fact_sql="sql/vessel_movement.sql", fact_sql_digest=digest, fact_params=params,
                fact=fact, source_hash=f.source_hash, context=context, n_context_records=int(f.n_positions),
                grounding=base + counts + values, region=region,
            )
            # most windows hold no major course change: keep as many of those as of the others
            (straight if form == "course_changes" and fact["major_course_changes"] == 0 else seeds).append(seed)
    turning = sum(s.form == "course_changes" for s in seeds)
    straight.sort(key=lambda s: s.seed_id)  # a hash: an even spread over vessels and hours
    return seeds + straight[: max(turning, MIN_STRAIGHT_WINDOWS)]
