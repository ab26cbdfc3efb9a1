"""Anomalies & data quality (DESIGN.md category 5): AIS gaps (dark periods), impossible position
jumps, loitering and speeds implausible for the vessel type, from sql/ais_gaps.sql,
sql/anomaly_jumps.sql, sql/loitering.sql and sql/speed_anomalies.sql.

Gaps and jumps are computed over every report received, including those staging set aside for
track rules (stg_flagged_positions): their contexts are rendered from the same reports (kind
"received_track"), so the jump the question asks about, and every report that bounds a gap, is in
the records. Each context ends with a line stating the rule its fact applies.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.catalogue.base import (
    CatalogueInputs, ContextSpec, FORMS, Form, POSITION_COLUMNS, Seed, Tracks, format_track, hhmm, iso,
    register_builder, register_form, register_renderer, seed_id, text_or_none, vessel_type_name,
)
from tasks.stage import FLAGGED_REASONS

# stage_positions writes the quarantine beside the staged positions (positions.parquet or the
# positions/ folder of day links); the reports set aside for track rules are read back from it
QUARANTINE_FILE = "quarantine_positions.parquet"
GAP_MARGIN_REPORTS = 8     # reports shown either side of a gap
JUMP_MARGIN_REPORTS = 6    # reports shown either side of a jump
LOITER_MARGIN_REPORTS = 3  # reports shown either side of a whole loiter
EDGE_REPORTS = 5           # reports shown before a loiter's start / after its end when it is cut
SPEED_MARGIN_REPORTS = 5   # reports shown either side of an implausible-speed episode


# ---------------------------------------------------------------------------------------------
# shared helpers (identity.py uses them too)

def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)



def flagged_positions(inputs: CatalogueInputs) -> pd.DataFrame:
    """The reports staging set aside for track rules (impossible jumps, conflicting positions),
    typed, from the quarantine file beside the staged positions; empty when there is none."""
    path = Path(inputs.positions_path).parent / QUARANTINE_FILE
    empty = pd.DataFrame({c: pd.Series(dtype=inputs.tracks.positions[c].dtype) for c in POSITION_COLUMNS})
    if not path.exists():
        return empty
    table = pd.read_parquet(path, columns=["reason", "payload"], filters=[("reason", "in", list(FLAGGED_REASONS))])
    if table.empty:
        return empty
    rows = pd.DataFrame([json.loads(p) for p in table["payload"]])
    rows["ts"] = pd.to_datetime(rows["ts"]).astype(inputs.tracks.positions["ts"].dtype)
    rows["row_hash"] = rows["row_hash"].str.replace("-", "")  # the JSON writes the UUID; kept rows hold its hex
    return rows[POSITION_COLUMNS]


def received_tracks(inputs: CatalogueInputs) -> Tracks:
    """Every report received per vessel, kept and flagged (column `flagged`), as the gap, jump and
    identity-conflict queries read them. Built once per CatalogueInputs."""
    cached = inputs.__dict__.get("_received_tracks")
    if cached is None:
        kept = inputs.tracks.positions.assign(flagged=False)
        flagged = flagged_positions(inputs)
        both = pd.concat([kept, flagged.assign(flagged=True)], ignore_index=True) if len(flagged) else kept
        cached = inputs.__dict__["_received_tracks"] = Tracks(both)
    return cached


@register_renderer("received_track")
def render_received_track(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    """One vessel's received reports (kept and flagged, unmarked, as a receiver logged them)."""
    rows = received_tracks(inputs).window(spec.mmsi, spec.start, spec.end, spec.inclusive_end)
    return format_track(rows, spec.mmsi, seed.vessel_name, seed.vessel_type, fmt, None, spec.get("rule"))


def word_name(value: Any) -> str | None:
    """A name or call sign as text when it reads as one (two letters at least): feeds also send
    "0" or digits there, and a name is taken out of a text before its numbers are checked."""
    text = text_or_none(value)
    return text.strip() if text and len(re.findall(r"[A-Za-z]", text)) >= 2 else None


def vessel_label(inputs: CatalogueInputs, mmsi: int) -> tuple[str | None, str]:
    """The vessel's name and type group (vessel_particulars: what it broadcast most often)."""
    # inputs.particulars() builds its dict on every call: keep one per CatalogueInputs
    by_mmsi = inputs.__dict__.get("_particulars_by_mmsi")
    if by_mmsi is None:
        by_mmsi = inputs.__dict__["_particulars_by_mmsi"] = inputs.particulars()
    p = by_mmsi.get(int(mmsi), {})
    return word_name(p.get("vessel_name")), vessel_type_name(p.get("vessel_type"))


def one_day(rows: pd.DataFrame) -> bool:
    """Contexts show times of day under one date: a context must not span midnight UTC."""
    return len(rows) > 0 and pd.Timestamp(rows["ts"].iloc[0]).date() == pd.Timestamp(rows["ts"].iloc[-1]).date()


def row_hash_of(row: dict[str, Any]) -> str:
    """Provenance for a fact row without a source_hash column: md5 of the row."""
    return hashlib.md5(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()


def make_seed(
    form: str, inputs: CatalogueInputs, fact_name: str, key: Any, mmsi: int, spec: ContextSpec, n_rows: int,
    fact: dict[str, Any], source_hash: str, grounding: list[dict[str, Any]], named: bool = True,
    region: str | None = None,
) -> Seed:
    """A candidate on one fact row; named=False leaves the vessel's name out of the question."""
    f = FORMS[form]
    name, vtype = vessel_label(inputs, mmsi)
    return Seed(
        seed_id=seed_id(form, mmsi, key, source_hash),
        category=f.category, difficulty=f.difficulty, form=form, answerable=True,
        mmsi=int(mmsi), asked_mmsi=int(mmsi), vessel_name=name if named else None,
        vessel_type=vtype, window_start=spec.start, window_end=spec.end,
        fact_sql=f"sql/{fact_name}.sql", fact_sql_digest=inputs.fact_digests.get(fact_name, ""),
        fact_params=inputs.fact_params.get(fact_name, {}), fact=fact, source_hash=source_hash, context=spec,
        n_context_records=int(n_rows), grounding=grounding,
        region=region if region is not None else inputs.region_at(mmsi, spec.start, spec.end),
    )


def ground(name: str, value: Any, kind: str, required: bool = False, role: str | None = None) -> dict[str, Any]:
    """One grounding entry: a value an answer may state (kind picks the tolerance); required: must
    state; role: what plausibility may not bound (see Seed.grounding)."""
    entry = {"name": name, "value": value, "kind": kind, "required": required}
    return entry | {"role": role} if role else entry


def at_or_after(track: pd.DataFrame, when: Any) -> int:
    """Index of the first report at or after `when` (len(track) when there is none)."""
    return int(np.searchsorted(track["ts"].to_numpy(), np.datetime64(pd.Timestamp(when)), side="left"))


def at_or_before(track: pd.DataFrame, when: Any) -> int:
    """Index of the last report at or before `when` (-1 when there is none)."""
    return int(np.searchsorted(track["ts"].to_numpy(), np.datetime64(pd.Timestamp(when)), side="right")) - 1


def _slice(track: pd.DataFrame, lo: int, hi: int) -> tuple[str, str]:
    """ISO start and end (inclusive) of track rows lo..hi."""
    return iso(track["ts"].iloc[lo]), iso(track["ts"].iloc[hi])


# ---------------------------------------------------------------------------------------------
# AIS gaps

def _gap_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    sog = [s for s in (f["start_sog_kn"], f["end_sog_kn"]) if s is not None]
    note = ""
    if len(sog) == 2:
        note = f" Before the gap it reported {f['start_sog_kn']:.1f} knots, after it {f['end_sog_kn']:.1f} knots."
    return {
        "gap_start": hhmm(f["gap_start"]), "gap_end": hhmm(f["gap_end"]), "minutes": f"{f['minutes']:.0f}",
        "hours": f"{f['minutes'] / 60:.1f}", "distance_nm": f"{f['distance_nm']:.1f}",
        "implied_sog_kn": f"{f['implied_sog_kn']:.1f}", "sog_note": note,
        "start_lat": f"{f['start_lat']:.5f}", "start_lon": f"{f['start_lon']:.5f}",
        "end_lat": f"{f['end_lat']:.5f}", "end_lon": f"{f['end_lon']:.5f}",
    }


register_form(Form(
    "gap_start", "anomalies", "easy",
    questions=(
        "When did {who} go dark?",
        "Did {who} stop transmitting at some point in these reports? If so, when did the silence begin?",
        "At what time does the AIS gap in the track of {who} begin?",
        "When was the last report from {who} before it went silent?",
    ),
    answers=(
        "{Who} went dark after its report at {gap_start} UTC.",
        "The last report before the gap is at {gap_start} UTC; after it {who} went silent.",
    ),
    reasoning=(
        "A dark period starts at the last report before two consecutive reports lie further apart than the gap rule allows.",
        "Scanning the report times for a silence longer than the gap threshold:",
    ),
    values=_gap_values, plant=("gap_start", "time"),
))
register_form(Form(
    "gap_duration", "anomalies", "medium",
    questions=(
        "How long was {who} dark, and where did the gap start and end?",
        "What was the duration of the AIS gap of {who}, and where was it before and after?",
        "For how many minutes did {who} stop transmitting, and between which positions?",
        "Describe the dark period of {who}: how long did it last and where did the vessel disappear and reappear?",
    ),
    answers=(
        "{Who} was dark for {minutes} minutes (about {hours} hours): its last report before the gap was at {gap_start} UTC at {start_lat}, {start_lon}, and it reappeared at {gap_end} UTC at {end_lat}, {end_lon}.",
        "The gap lasted {minutes} minutes, from {gap_start} UTC ({start_lat}, {start_lon}) to {gap_end} UTC ({end_lat}, {end_lon}).",
    ),
    reasoning=(
        "The gap runs from the last report before the silence ({gap_start} UTC) to the first one after it ({gap_end} UTC).",
        "Subtracting the time of the last report before the silence from the time of the first one after it:",
    ),
    values=_gap_values, plant=("minutes", "minutes"),
))
register_form(Form(
    "gap_distance", "anomalies", "hard",
    questions=(
        "How far did {who} move while it was dark, and what average speed does that imply?",
        "Between the reports either side of its AIS gap, how far apart are the positions of {who}, and what speed would cover that distance in the time?",
        "Is the position of {who} after its dark period consistent with a vessel under way? Give the distance and the implied speed.",
        "What distance separates the positions of {who} before and after its gap, and at what mean speed?",
    ),
    answers=(
        "{Who} moved {distance_nm} nautical miles in the {minutes} minutes it was dark, an implied average speed of {implied_sog_kn} knots.{sog_note}",
        "The positions either side of the gap are {distance_nm} nautical miles apart; covering that in {minutes} minutes takes {implied_sog_kn} knots on average.{sog_note}",
    ),
    reasoning=(
        "The great-circle distance between the reports at {gap_start} and {gap_end} UTC, divided by the {minutes} minutes between them:",
        "Implied speed = distance between the two positions bounding the gap / time between them.",
    ),
    values=_gap_values, plant=("distance_nm", "number"),
))


@register_builder("anomalies")
def gap_candidates(inputs: CatalogueInputs) -> list[Seed]:
    gaps = inputs.fact("ais_gaps")
    if gaps.empty:
        return []
    received = received_tracks(inputs)
    gap_minutes = float(inputs.fact_params.get("ais_gaps", {}).get("gap_minutes", 30.0))
    rule = f"An AIS gap (dark period) is two consecutive reports of one vessel more than {gap_minutes:g} min apart."
    margin = max(0, min(GAP_MARGIN_REPORTS, (inputs.cfg.max_context_records - 2) // 2))
    seeds = []
    for r in gaps.itertuples(index=False):
        track = received.by_mmsi.get(int(r.mmsi))
        if track is None:
            continue
        j = at_or_after(track, r.gap_end)
        i = j - 1
        # the reports bounding the gap are in the records, next to each other
        if i < 0 or j >= len(track) or track["ts"].iloc[i] != pd.Timestamp(r.gap_start):
            continue
        lo, hi = max(0, i - margin), min(len(track) - 1, j + margin)
        start, end = _slice(track, lo, hi)
        rows = received.window(r.mmsi, start, end, inclusive_end=True)
        if not 2 <= len(rows) <= inputs.cfg.max_context_records or not one_day(rows):
            continue
        # this is the only gap the records show, so "when did it go dark" has one answer
        steps = pd.to_datetime(rows["ts"]).diff().dt.total_seconds().div(60)
        if int((steps > gap_minutes).sum()) != 1:
            continue
        fact = {
            "gap_start": iso(r.gap_start), "gap_end": iso(r.gap_end), "minutes": float(r.minutes),
            "distance_nm": float(r.distance_nm), "implied_sog_kn": float(r.implied_sog_kn),
            "start_lat": float(r.start_lat), "start_lon": float(r.start_lon),
            "end_lat": float(r.end_lat), "end_lon": float(r.end_lon),
            "start_sog_kn": _number(r.start_sog_kn), "end_sog_kn": _number(r.end_sog_kn),
        }
        spec = ContextSpec("received_track", int(r.mmsi), start, end, True, None, (("rule", rule),))
        base = [ground("mmsi", int(r.mmsi), "id")]
        # the positions and speeds either side of a gap are as reported, and what they imply (distance
        # moved, speed needed) may be impossible: that is what a gap question checks
        positions = [ground(f"{end}_{axis}", fact[f"{end}_{axis}"], axis, role="reported")
                     for end in ("start", "end") for axis in ("lat", "lon")]
        speeds = [ground("start_sog_kn", fact["start_sog_kn"], "speed_kn", role="reported"),
                  ground("end_sog_kn", fact["end_sog_kn"], "speed_kn", role="reported")]
        per_form = {
            "gap_start": [ground("gap_start", fact["gap_start"], "time", True)],
            "gap_duration": [
                ground("minutes", fact["minutes"], "minutes", True), ground("hours", fact["minutes"] / 60, "hours"),
                ground("gap_start", fact["gap_start"], "time", True), ground("gap_end", fact["gap_end"], "time", True),
            ] + positions,
            "gap_distance": [
                ground("distance_nm", fact["distance_nm"], "distance_nm", True, role="reported"),
                ground("implied_sog_kn", fact["implied_sog_kn"], "speed_kn", True, role="reported"),
                ground("minutes", fact["minutes"], "minutes"),
                ground("gap_start", fact["gap_start"], "time"), ground("gap_end", fact["gap_end"], "time"),
            ] + [s for s in speeds if s["value"] is not None],
        }
        for form, values in per_form.items():
            seeds.append(make_seed(form, inputs, "ais_gaps", r.gap_start, int(r.mmsi), spec, len(rows), fact,
                                   str(r.source_hash), base + values))
    return seeds


# ---------------------------------------------------------------------------------------------
# impossible jumps

def _jump_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    sog = "" if f["sog_kn"] is None else f", while the report itself gives a speed over ground of {f['sog_kn']:.1f} knots"
    return {
        "ts": hhmm(f["ts"]), "prev_ts": hhmm(f["prev_ts"]), "next_ts": hhmm(f["next_ts"]),
        "lat": f"{f['lat']:.5f}", "lon": f"{f['lon']:.5f}",
        "dist_prev_nm": f"{f['dist_prev_nm']:.1f}", "dist_next_nm": f"{f['dist_next_nm']:.1f}",
        "knots_from_previous": f"{f['knots_from_previous']:.1f}", "knots_to_next": f"{f['knots_to_next']:.1f}",
        "off_track_nm": f"{f['off_track_nm']:.1f}", "sog_clause": sog,
    }


register_form(Form(
    "jump_report", "anomalies", "easy",
    questions=(
        "Which report of {who} is an impossible position jump?",
        "One of these positions of {who} cannot be right. Which one?",
        "Is there a position report of {who} that jumps off its track? Give its time and position.",
        "At what time does {who} report a position it cannot have reached?",
    ),
    answers=(
        "The report at {ts} UTC, at {lat}, {lon}, is an impossible jump: the reports just before and after it lie close together, far from it.",
        "The position reported at {ts} UTC ({lat}, {lon}) is the jump; the track continues from the previous report as if it had not happened.",
    ),
    reasoning=(
        "Comparing each position with its neighbours, one report lies far away from both the report before and the report after it.",
        "Looking for a report whose neighbours agree with each other but not with it:",
    ),
    values=_jump_values, plant=("ts", "time"),
))
register_form(Form(
    "jump_distance", "anomalies", "medium",
    questions=(
        "How far does the jumping report of {who} lie from the reports before and after it?",
        "{Who} reports one position far off its track. How far is it from its neighbouring reports?",
        "What distance separates the out-of-place report of {who} from the previous and the next report?",
    ),
    answers=(
        "The report at {ts} UTC lies {dist_prev_nm} nautical miles from the previous report ({prev_ts} UTC) and {dist_next_nm} nautical miles from the next one ({next_ts} UTC).",
        "The jump at {ts} UTC is {dist_prev_nm} nautical miles from the report at {prev_ts} UTC and {dist_next_nm} nautical miles from the report at {next_ts} UTC.",
    ),
    reasoning=(
        "Taking the great-circle distance from the out-of-place position to each of its neighbours:",
        "The haversine distance between the jump and the report before it, then the report after it:",
    ),
    values=_jump_values, plant=("dist_prev_nm", "number"),
))
register_form(Form(
    "jump_speed", "anomalies", "hard",
    questions=(
        "What speed would {who} need to reach its out-of-place position and get back to its track? Is that possible?",
        "Why is one position of {who} impossible? Give the speeds it implies.",
        "Check the position jump of {who}: what speed from the previous report, and to the next, would it require?",
    ),
    answers=(
        "To reach {lat}, {lon} at {ts} UTC from its report at {prev_ts} UTC, {who} would need {knots_from_previous} knots, and {knots_to_next} knots to get back to its next report at {next_ts} UTC{sog_clause}. No vessel moves that fast: the report is a position error, {off_track_nm} nautical miles off the track between its neighbours.",
        "The jump implies {knots_from_previous} knots from the previous report ({prev_ts} UTC) and {knots_to_next} knots to the next ({next_ts} UTC){sog_clause}; that is impossible, so the position at {ts} UTC is wrong.",
    ),
    reasoning=(
        "Implied speed = great-circle distance between consecutive positions / time between them; it is computed to and from the jump.",
        "Dividing the distance from each neighbour by the time to that neighbour:",
    ),
    values=_jump_values, plant=("knots_from_previous", "number"),
))


@register_builder("anomalies")
def jump_candidates(inputs: CatalogueInputs) -> list[Seed]:
    jumps = inputs.fact("anomaly_jumps")
    if jumps.empty:
        return []
    received = received_tracks(inputs)
    rule = ("A report is an impossible jump when the speed needed to reach it from the previous report, "
            "and to reach the next report from it, is beyond any vessel.")
    margin = max(1, min(JUMP_MARGIN_REPORTS, (inputs.cfg.max_context_records - 1) // 2))
    seeds = []
    for r in jumps.itertuples(index=False):
        if pd.isna(r.prev_ts) or pd.isna(r.next_ts):
            continue
        track = received.by_mmsi.get(int(r.mmsi))
        if track is None:
            continue
        at = track.index[(track["ts"] == pd.Timestamp(r.ts)) & track["flagged"]
                         & np.isclose(track["lat"], r.lat) & np.isclose(track["lon"], r.lon)]
        if len(at) != 1:
            continue
        k = int(at[0])
        # its neighbours in the records are the kept reports the implied speeds were computed from
        if k == 0 or k + 1 >= len(track) or track["ts"].iloc[k - 1] != pd.Timestamp(r.prev_ts) \
                or track["ts"].iloc[k + 1] != pd.Timestamp(r.next_ts):
            continue
        lo, hi = max(0, k - margin), min(len(track) - 1, k + margin)
        start, end = _slice(track, lo, hi)
        rows = received.window(r.mmsi, start, end, inclusive_end=True)
        # one out-of-place report in the records, so "which one" has one answer
        if not 3 <= len(rows) <= inputs.cfg.max_context_records or not one_day(rows) or int(rows["flagged"].sum()) != 1:
            continue
        dt_prev = max((pd.Timestamp(r.ts) - pd.Timestamp(r.prev_ts)).total_seconds(), 1.0)
        dt_next = max((pd.Timestamp(r.next_ts) - pd.Timestamp(r.ts)).total_seconds(), 1.0)
        fact = {
            "ts": iso(r.ts), "lat": float(r.lat), "lon": float(r.lon), "sog_kn": _number(r.sog_kn),
            "prev_ts": iso(r.prev_ts), "next_ts": iso(r.next_ts),
            "knots_from_previous": float(r.knots_from_previous), "knots_to_next": float(r.knots_to_next),
            # distance = implied speed x time (the query's haversine distance, recovered exactly)
            "dist_prev_nm": float(r.knots_from_previous) * dt_prev / 3600.0,
            "dist_next_nm": float(r.knots_to_next) * dt_next / 3600.0,
            "off_track_nm": float(r.off_track_nm),
        }
        spec = ContextSpec("received_track", int(r.mmsi), start, end, True, None, (("rule", rule),))
        base = [ground("mmsi", int(r.mmsi), "id")]
        # a jump's position, and the speeds and distances it implies, are impossible on purpose
        where = [ground("lat", fact["lat"], "lat", role="reported"), ground("lon", fact["lon"], "lon", role="reported")]
        neighbours = [ground("prev_ts", fact["prev_ts"], "time"), ground("next_ts", fact["next_ts"], "time")]
        per_form = {
            "jump_report": [ground("ts", fact["ts"], "time", True)] + where,
            "jump_distance": [
                ground("dist_prev_nm", fact["dist_prev_nm"], "distance_nm", True, role="reported"),
                ground("dist_next_nm", fact["dist_next_nm"], "distance_nm", True, role="reported"),
                ground("ts", fact["ts"], "time"),
            ] + neighbours,
            "jump_speed": [
                ground("knots_from_previous", fact["knots_from_previous"], "speed_kn", True, role="reported"),
                ground("knots_to_next", fact["knots_to_next"], "speed_kn", True, role="reported"),
                ground("off_track_nm", fact["off_track_nm"], "distance_nm", role="reported"), ground("ts", fact["ts"], "time"),
            ] + neighbours + where + ([ground("sog_kn", fact["sog_kn"], "speed_kn", role="reported")]
                                      if fact["sog_kn"] is not None else []),
        }
        for form, values in per_form.items():
            seeds.append(make_seed(form, inputs, "anomaly_jumps", r.ts, int(r.mmsi), spec, len(rows), fact,
                                   str(r.source_hash), base + values))
    return seeds


# ---------------------------------------------------------------------------------------------
# loitering

def _loiter_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    return {
        "loiter_start": hhmm(f["loiter_start"]), "loiter_end": hhmm(f["loiter_end"]),
        "minutes": f"{f['minutes']:.0f}", "hours": f"{f['minutes'] / 60:.1f}", "n_reports": str(f["n_reports"]),
        "mean_sog_kn": f"{f['mean_sog_kn']:.1f}", "max_sog": f"{f['loiter_max_sog_kn']:g}",
        "radius": f"{f['loiter_radius_nm']:g}", "min_minutes": f"{f['loiter_min_minutes']:g}",
    }


register_form(Form(
    "loiter_start", "anomalies", "easy",
    questions=(
        "When did {who} start loitering?",
        "At what time did {who} begin to loiter away from port?",
        "Does {who} loiter in these reports? If so, from when?",
        "From which report on is {who} loitering?",
    ),
    answers=(
        "{Who} started loitering at {loiter_start} UTC.",
        "From its report at {loiter_start} UTC on, {who} stays slow and within a small area away from any port: that is where its loiter starts.",
    ),
    reasoning=(
        "A loiter begins at the first of a run of reports at or below {max_sog} knots, away from ports and within {radius} nautical miles, lasting at least {min_minutes} minutes.",
        "Finding the first report from which the vessel stays slow and in one small area for at least {min_minutes} minutes:",
    ),
    values=_loiter_values, plant=("loiter_start", "time"),
))
register_form(Form(
    "loiter_end", "anomalies", "medium",
    questions=(
        "When did {who} stop loitering?",
        "At what time did the loitering of {who} end?",
        "What is the last report of {who} in its loiter?",
    ),
    answers=(
        "{Who} stopped loitering after its report at {loiter_end} UTC.",
        "The loiter ends at {loiter_end} UTC: the next report no longer meets the loitering rule.",
    ),
    reasoning=(
        "The loiter ends at the last report of the run before the speed rises above {max_sog} knots or the vessel comes near a port.",
        "Following the slow reports forward to the last one that still meets the loitering rule:",
    ),
    values=_loiter_values, plant=("loiter_end", "time"),
))
register_form(Form(
    "loiter_duration", "anomalies", "hard",
    questions=(
        "How long did {who} loiter, and at what average speed?",
        "For how many minutes was {who} loitering, from when to when?",
        "Describe the loiter of {who}: start, end, duration and mean speed.",
    ),
    answers=(
        "{Who} loitered from {loiter_start} to {loiter_end} UTC, {minutes} minutes (about {hours} hours), at a mean speed of {mean_sog_kn} knots over {n_reports} reports.",
        "The loiter lasted {minutes} minutes, from {loiter_start} to {loiter_end} UTC; the {n_reports} reports in it average {mean_sog_kn} knots.",
    ),
    reasoning=(
        "The run of slow reports away from ports starts at {loiter_start} and ends at {loiter_end} UTC; its duration is the time between them.",
        "Duration = time of the last loitering report - time of the first; mean speed = average SOG of the {n_reports} reports in the run.",
    ),
    values=_loiter_values, plant=("minutes", "minutes"),
))


@register_builder("anomalies")
def loiter_candidates(inputs: CatalogueInputs) -> list[Seed]:
    loiters = inputs.fact("loitering")
    if loiters.empty:
        return []
    params = inputs.fact_params.get("loitering", {})
    max_sog = float(params.get("loiter_max_sog_kn", 3.0))
    min_minutes = float(params.get("loiter_min_minutes", 60.0))
    radius = float(params.get("loiter_radius_nm", 1.0))
    port_radius = float(params.get("port_radius_nm", 5.0))
    gap_minutes = float(inputs.fact_params.get("ais_gaps", {}).get("gap_minutes", 30.0))
    rule = (f"Loitering is a run of consecutive reports at or below {max_sog:g} kn, each more than {port_radius:g} nm "
            f"from every port and all within {radius:g} nm of the run's mean position, lasting at least "
            f"{min_minutes:g} min.")
    cap = inputs.cfg.max_context_records
    seeds = []
    for r in loiters.itertuples(index=False):
        track = inputs.tracks.by_mmsi.get(int(r.mmsi))
        if track is None:
            continue
        ts = track["ts"]
        i_s, i_e = at_or_after(track, r.start), at_or_before(track, r.end)
        if i_s >= len(track) or ts.iloc[i_s] != pd.Timestamp(r.start) or ts.iloc[i_e] != pd.Timestamp(r.end):
            continue
        # a run across an AIS gap was not seen loitering throughout (loitering.sql does not split runs at gaps)
        if (ts.iloc[i_s:i_e + 1].diff().dt.total_seconds() > gap_minutes * 60).any():
            continue
        has_before, has_after = i_s > 0, i_e + 1 < len(track)  # a loiter cut by the data's edge has no start / end
        fact = {
            "loiter_start": iso(r.start), "loiter_end": iso(r.end), "minutes": float(r.minutes),
            "n_reports": int(r.n_reports), "mean_sog_kn": float(r.mean_sog_kn), "center_lat": float(r.center_lat),
            "center_lon": float(r.center_lon), "max_radius_nm": float(r.max_radius_nm),
            "loiter_max_sog_kn": max_sog, "loiter_min_minutes": min_minutes, "loiter_radius_nm": radius,
        }
        rules = [ground("loiter_max_sog_kn", max_sog, "speed_kn", role="threshold"),
                 ground("loiter_radius_nm", radius, "distance_nm", role="threshold"),
                 ground("loiter_min_minutes", min_minutes, "minutes", role="threshold")]
        per_form = {
            "loiter_start": [ground("loiter_start", fact["loiter_start"], "time", True)],
            "loiter_end": [ground("loiter_end", fact["loiter_end"], "time", True)],
            "loiter_duration": [
                ground("minutes", fact["minutes"], "minutes", True), ground("hours", fact["minutes"] / 60, "hours"),
                ground("loiter_start", fact["loiter_start"], "time", True),
                ground("loiter_end", fact["loiter_end"], "time", True),
                ground("mean_sog_kn", fact["mean_sog_kn"], "speed_kn"), ground("n_reports", fact["n_reports"], "count"),
            ],
        }
        # the whole loiter when it fits one context (all three forms, a dialogue); else its start
        # and its end, each with the first / last hour of the run so the rule can be checked
        windows: dict[str, tuple[int, int]] = {}
        lo, hi = max(0, i_s - LOITER_MARGIN_REPORTS), min(len(track) - 1, i_e + LOITER_MARGIN_REPORTS)
        if hi - lo + 1 <= cap and has_before and has_after:
            windows = {form: (lo, hi) for form in per_form}
        else:
            if has_before:
                first_hour = at_or_after(track, pd.Timestamp(r.start) + pd.Timedelta(minutes=min_minutes))
                windows["loiter_start"] = (max(0, i_s - EDGE_REPORTS), min(first_hour, i_e))
            if has_after:
                last_hour = at_or_before(track, pd.Timestamp(r.end) - pd.Timedelta(minutes=min_minutes))
                windows["loiter_end"] = (max(last_hour, i_s), min(len(track) - 1, i_e + EDGE_REPORTS))
        for form, (a, b) in windows.items():
            start, end = _slice(track, a, b)
            rows = inputs.tracks.window(r.mmsi, start, end, inclusive_end=True)
            if not 2 <= len(rows) <= cap or not one_day(rows):
                continue
            spec = ContextSpec("track", int(r.mmsi), start, end, True, (float(r.center_lat), float(r.center_lon)),
                               (("ports_radius_nm", 2 * port_radius), ("rule", rule)))
            seeds.append(make_seed(form, inputs, "loitering", r.start, int(r.mmsi), spec, len(rows), fact,
                                   str(r.source_hash), [ground("mmsi", int(r.mmsi), "id")] + per_form[form] + rules))
    return seeds


# ---------------------------------------------------------------------------------------------
# speeds implausible for the vessel type

def _speed_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    if f["n_reports"] == 1:
        span, count = f"The report at {hhmm(f['anomaly_start'])} UTC is", "1 report"
    else:
        span = f"The reports from {hhmm(f['anomaly_start'])} to {hhmm(f['anomaly_end'])} UTC are"
        count = f"{f['n_reports']} consecutive reports"
    return {
        "anomaly_start": hhmm(f["anomaly_start"]), "anomaly_end": hhmm(f["anomaly_end"]),
        "max_sog_kn": f"{f['max_sog_kn']:.1f}", "limit_kn": f"{f['limit_kn']:.1f}", "type_name": f["type_name"],
        "type_code": str(f["vessel_type_code"]), "span": span, "count": count,
    }


register_form(Form(
    "implausible_speed_start", "anomalies", "easy",
    questions=(
        "When did {who} first report a speed that is implausible for its type?",
        "Does {who} report an impossible speed for a vessel of its type? From what time?",
        "At what time does the speed over ground of {who} first exceed what its vessel type can do?",
    ),
    answers=(
        "{Who} first reported an implausible speed at {anomaly_start} UTC, above the {limit_kn} knots plausible for a {type_name} vessel.",
        "From {anomaly_start} UTC its reported speed over ground exceeds the plausible maximum of {limit_kn} knots for its type.",
    ),
    reasoning=(
        "Comparing each reported SOG with the plausible maximum for the vessel's AIS ship type:",
        "The first report whose speed over ground is above the type's plausible maximum marks the start.",
    ),
    values=_speed_values, plant=("anomaly_start", "time"),
))
register_form(Form(
    "implausible_speed_peak", "anomalies", "medium",
    questions=(
        "What is the highest implausible speed {who} reported, and how many reports exceed its type's maximum?",
        "How fast does {who} claim to go in its implausible reports, at most, and in how many reports?",
        "Give the peak reported speed of {who} above its plausible maximum and the number of such reports.",
    ),
    answers=(
        "The highest reported speed is {max_sog_kn} knots; {count} exceed the plausible maximum of {limit_kn} knots for a {type_name} vessel.",
        "{Who} reports up to {max_sog_kn} knots, in {count} above the {limit_kn} knots its type can plausibly make.",
    ),
    reasoning=(
        "Counting the consecutive reports above {limit_kn} knots and taking the largest SOG among them:",
        "Every SOG above the type's plausible maximum of {limit_kn} knots is counted; the largest is the peak.",
    ),
    values=_speed_values, plant=("max_sog_kn", "number"),
))
register_form(Form(
    "implausible_speed_why", "anomalies", "hard",
    questions=(
        "Which report of {who} is implausible for its vessel type, and why?",
        "Something is wrong with the speeds {who} reports. Which reports, and what is wrong?",
        "Explain which speed reports of {who} cannot be right given what kind of vessel it is.",
    ),
    answers=(
        "{span} implausible: {who} is AIS ship type {type_code} ({type_name}), for which {limit_kn} knots is the plausible maximum, yet it reported up to {max_sog_kn} knots. That is a transponder or decoding error, not a real speed.",
        "{span} wrong: a {type_name} vessel (AIS type {type_code}) plausibly makes at most {limit_kn} knots, but {who} reported up to {max_sog_kn} knots over ground.",
    ),
    reasoning=(
        "The vessel's AIS ship type is {type_code} ({type_name}); its plausible maximum is {limit_kn} knots, and the reported SOG is compared with it.",
        "Looking up the plausible maximum for ship type {type_code} and checking each SOG against it:",
    ),
    values=_speed_values, plant=("max_sog_kn", "number"),
))


@register_builder("anomalies")
def implausible_speed_candidates(inputs: CatalogueInputs) -> list[Seed]:
    episodes = inputs.fact("speed_anomalies")
    if episodes.empty:
        return []
    cap = inputs.cfg.max_context_records
    seeds = []
    for r in episodes.itertuples(index=False):
        track = inputs.tracks.by_mmsi.get(int(r.mmsi))
        if track is None:
            continue
        i_s, i_e = at_or_after(track, r.start), at_or_before(track, r.end)
        if i_s >= len(track) or i_e < i_s:
            continue
        margin = max(0, min(SPEED_MARGIN_REPORTS, (cap - (i_e - i_s + 1)) // 2))
        start, end = _slice(track, max(0, i_s - margin), min(len(track) - 1, i_e + margin))
        rows = inputs.tracks.window(r.mmsi, start, end, inclusive_end=True)
        if not 2 <= len(rows) <= cap or not one_day(rows):
            continue
        rule = (f"Plausible maximum speed over ground for AIS ship type {int(r.vessel_type_code)} ({r.type_name}): "
                f"{float(r.limit_kn):g} kn; a higher reported SOG is implausible for the vessel.")
        fact = {
            "anomaly_start": iso(r.start), "anomaly_end": iso(r.end), "max_sog_kn": float(r.max_sog_kn),
            "limit_kn": float(r.limit_kn), "n_reports": int(r.n_reports), "type_name": str(r.type_name),
            "vessel_type_code": int(r.vessel_type_code),
        }
        spec = ContextSpec("track", int(r.mmsi), start, end, True, None, (("rule", rule),))
        base = [ground("mmsi", int(r.mmsi), "id")]
        limit = [ground("limit_kn", fact["limit_kn"], "speed_kn", role="threshold"), ground("type_name", fact["type_name"], "label")]
        times = [ground("anomaly_start", fact["anomaly_start"], "time"), ground("anomaly_end", fact["anomaly_end"], "time")]
        per_form = {
            "implausible_speed_start": [ground("anomaly_start", fact["anomaly_start"], "time", True)] + limit,
            # the peak is the implausible speed the transponder reported
            "implausible_speed_peak": [ground("max_sog_kn", fact["max_sog_kn"], "speed_kn", True, role="reported"),
                                       ground("n_reports", fact["n_reports"], "count", True)] + limit,
            "implausible_speed_why": [
                ground("max_sog_kn", fact["max_sog_kn"], "speed_kn", True, role="reported"),
                ground("limit_kn", fact["limit_kn"], "speed_kn", True, role="threshold"),
                ground("type_name", fact["type_name"], "label", True),
                ground("type_code", fact["vessel_type_code"], "count"),
            ] + times,
        }
        for form, values in per_form.items():
            seeds.append(make_seed(form, inputs, "speed_anomalies", r.start, int(r.mmsi), spec, len(rows), fact,
                                   str(r.source_hash), base + values))
    return seeds
