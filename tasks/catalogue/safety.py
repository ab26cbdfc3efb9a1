"""Safety & encounters (DESIGN.md category 6): close-quarters situations between two underway
vessels, from sql/close_encounters.sql: the closest point of approach (CPA) dead-reckoned from one
report of each vessel, the time to it (TCPA), and the COLREG situation (head-on, crossing,
overtaking) with the geometry that decides it.

The context is both vessels' reports in the encounter's time bucket, plus the rule the fact
applies. An encounter is asked only where those reports give the fact: each vessel's first
underway report in the bucket is the one the query dead-reckoned, and the situation recomputed
here from the fact's geometry is the query's.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tasks.catalogue.base import (
    FORMS, CatalogueInputs, ContextSpec, Form, Seed, iso, region_of, register_builder, register_form,
    register_renderer, report_lines, seed_id, text_or_none, vessel_type_name,
)

# COLREG thresholds of sql/close_encounters.sql (degrees); a fact classified otherwise is not asked
HEAD_ON_MIN_DEG = 170.0           # head-on: courses reciprocal within 10 degrees
OVERTAKING_MAX_DIFF_DEG = 67.5    # overtaking: courses within 67.5 degrees ...
ABAFT_BEAM = (112.5, 247.5)       # ... and one vessel more than 22.5 degrees abaft the other's beam
SITUATION_WORDS = {"head_on": "head-on", "crossing": "crossing", "overtaking": "overtaking"}
NM_PER_DEG_LAT = 3440.065 * math.pi / 180  # the haversine sphere's nm per degree of latitude


def _vessel(mmsi: int, name: str | None) -> str:
    return f"vessel {mmsi} ({name})" if name else f"vessel {mmsi}"


def _hms(value: Any) -> str:
    return pd.Timestamp(value).strftime("%H:%M:%S")


def horizon_geometry(f: dict[str, Any], horizon_minutes: float) -> tuple[float, float, str]:
    """The relative bearings (degrees) of b from a and of a from b when the CPA is horizon_minutes
    away, and the COLREG situation they give, recomputed from the fact's detection geometry the
    way sql/close_encounters.sql does (flat east/north plane, constant course and speed)."""
    east = f["range_nm"] * math.sin(math.radians(f["bearing_deg"]))
    north = f["range_nm"] * math.cos(math.radians(f["bearing_deg"]))
    rel_east = f["sog_b_kn"] * math.sin(math.radians(f["cog_b_deg"])) - f["sog_a_kn"] * math.sin(math.radians(f["cog_a_deg"]))
    rel_north = f["sog_b_kn"] * math.cos(math.radians(f["cog_b_deg"])) - f["sog_a_kn"] * math.cos(math.radians(f["cog_a_deg"]))
    back_h = f["tcpa_minutes"] / 60.0 - horizon_minutes / 60.0
    bearing = math.degrees(math.atan2(east + rel_east * back_h, north + rel_north * back_h)) % 360.0
    b_from_a = (bearing - f["cog_a_deg"] + 360.0) % 360.0
    a_from_b = (bearing + 180.0 - f["cog_b_deg"] + 360.0) % 360.0
    abaft = lambda rel: ABAFT_BEAM[0] < rel < ABAFT_BEAM[1]  # noqa: E731
    if f["course_difference_deg"] >= HEAD_ON_MIN_DEG:
        situation = "head_on"
    elif f["course_difference_deg"] < OVERTAKING_MAX_DIFF_DEG and (abaft(b_from_a) or abaft(a_from_b)):
        situation = "overtaking"
    else:
        situation = "crossing"
    return b_from_a, a_from_b, situation


def _geometry(f: dict[str, Any], who: str, other: str) -> str:
    """The worked COLREG geometry, one sentence; every number in it is grounded."""
    diff, horizon = f"{f['course_difference_deg']:.0f}", f"{f['tcpa_limit_minutes']:g}"
    b_from_a, a_from_b = f"{f['b_from_a_deg']:.0f}", f"{f['a_from_b_deg']:.0f}"
    if f["situation"] == "head_on":
        return f"the courses differ by {diff}°, at least {HEAD_ON_MIN_DEG:g}°: nearly reciprocal, so the vessels meet head-on"
    if f["situation"] == "overtaking":
        if ABAFT_BEAM[0] < f["b_from_a_deg"] < ABAFT_BEAM[1]:
            faster, slower, rel = other, who, b_from_a
        else:
            faster, slower, rel = who, other, a_from_b
        return (f"the courses differ by only {diff}° (under {OVERTAKING_MAX_DIFF_DEG:g}°), and {horizon} minutes before the CPA "
                f"{faster} bore {rel}° relative from {slower}, more than 22.5° abaft its beam (between {ABAFT_BEAM[0]:g}° "
                f"and {ABAFT_BEAM[1]:g}°): {faster} is overtaking {slower}")
    if f["course_difference_deg"] >= OVERTAKING_MAX_DIFF_DEG:
        return (f"the courses differ by {diff}°, between {OVERTAKING_MAX_DIFF_DEG:g}° and {HEAD_ON_MIN_DEG:g}°: "
                f"neither nearly reciprocal nor nearly parallel, so the vessels are crossing")
    return (f"the courses differ by only {diff}°, but {horizon} minutes before the CPA neither vessel was abaft the other's "
            f"beam ({other} bore {b_from_a}° relative from {who}, {who} {a_from_b}° from {other}; abaft is between "
            f"{ABAFT_BEAM[0]:g}° and {ABAFT_BEAM[1]:g}°), so the vessels are crossing")


def _values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    other = _vessel(f["mmsi_b"], f["other_name"])
    who = _vessel(f["mmsi_a"], seed.vessel_name)  # the teacher's {who} for the same vessel
    word = SITUATION_WORDS[f["situation"]]
    return {
        "other": other, "Other": other[0].upper() + other[1:], "other_mmsi": str(f["mmsi_b"]),
        "cpa_nm": f"{f['cpa_nm']:.2f}", "cpa_limit": f"{f['cpa_limit_nm']:g}", "tcpa": f"{f['tcpa_minutes']:.1f}",
        "cpa_time": _hms(f["cpa_time"]), "detected": _hms(f["detected_at"]),
        "time_a": _hms(f["report_a_time"]), "time_b": _hms(f["report_b_time"]),
        "sog_a": f"{f['sog_a_kn']:.1f}", "sog_b": f"{f['sog_b_kn']:.1f}",
        "cog_a": f"{f['cog_a_deg']:.0f}", "cog_b": f"{f['cog_b_deg']:.0f}", "course_diff": f"{f['course_difference_deg']:.0f}",
        "situation": word, "Situation": word[0].upper() + word[1:], "geometry": _geometry(f, who, other),
    }


register_form(Form(
    "encounter_vessel", "safety", "easy",
    questions=(
        "Which vessel came close to {who} between {start} and {end} UTC on {day}?",
        "Name the vessel that {who} met in a close-quarters situation in these reports.",
        "Which other ship was on a close approach with {who} in the window {start}-{end} UTC?",
        "Who did {who} nearly meet between {start} and {end} UTC, and did they come within the close-quarters distance?",
    ),
    answers=(
        "{Other} came closest: dead-reckoned from their first underway reports, the two pass {cpa_nm} nm apart, inside the {cpa_limit} nm close-quarters limit.",
        "It was {other}; their closest point of approach is {cpa_nm} nm, within the {cpa_limit} nm limit.",
    ),
    reasoning=(
        "Besides {who}, the reports show one other vessel, {other}.",
        "The only other MMSI in the reports is {other_mmsi}.",
    ),
    values=_values, plant=("cpa_nm", "number"),
))
register_form(Form(
    "encounter_courses", "safety", "easy",
    questions=(
        "What courses and speeds were {who} and the other vessel making at the start of their approach between {start} and {end} UTC?",
        "How fast, and on which courses, were {who} and the other vessel sailing in their first underway reports of this window?",
        "By how many degrees did the courses of {who} and the other vessel differ between {start} and {end} UTC, and at what speeds?",
    ),
    answers=(
        "{Who} was making {sog_a} knots on course {cog_a}° (report at {time_a} UTC) and {other} {sog_b} knots on course {cog_b}° (report at {time_b} UTC); their courses differ by {course_diff}°.",
        "At {time_a} UTC {who} steered {cog_a}° at {sog_a} knots; at {time_b} UTC {other} steered {cog_b}° at {sog_b} knots, a course difference of {course_diff}°.",
    ),
    reasoning=(
        "Taking each vessel's first report in the window at or above the underway speed:",
        "Reading sog_kn and cog_deg from the first underway report of each vessel:",
    ),
    values=_values, plant=("sog_a", "number"),
))
register_form(Form(
    "encounter_cpa", "safety", "medium",
    questions=(
        "What is the closest point of approach between {who} and the other vessel, and when is it reached?",
        "Dead-reckoning their reports from {start}-{end} UTC, how close do {who} and the other vessel get, and how many minutes later (TCPA)?",
        "Compute the CPA and TCPA of {who} and the other vessel from the reports between {start} and {end} UTC on {day}.",
        "How near will {who} and the other vessel pass, and at what time?",
    ),
    answers=(
        "The CPA is {cpa_nm} nm, reached at {cpa_time} UTC, a TCPA of {tcpa} minutes after {detected} UTC; that is inside the {cpa_limit} nm limit.",
        "{Who} and {other} close to {cpa_nm} nm at {cpa_time} UTC, {tcpa} minutes after the later report ({detected} UTC).",
    ),
    reasoning=(
        "Dead-reckoning {who}'s {time_a} report ({sog_a} kn, {cog_a}°) and {other}'s {time_b} report ({sog_b} kn, {cog_b}°) at constant course and speed from {detected} UTC:",
        "Both vessels are moved along their course at their speed from the later report, at {detected} UTC, and their relative motion gives the closest point.",
    ),
    values=_values, plant=("cpa_nm", "number"),
))
register_form(Form(
    "encounter_situation", "safety", "hard",
    questions=(
        "Under the COLREGs, what kind of encounter is this between {who} and the other vessel: head-on, crossing or overtaking?",
        "Classify the close-quarters situation of {who} and the other vessel between {start} and {end} UTC, and show the geometry.",
        "Is the approach of {who} and the other vessel on {day} head-on, crossing or overtaking? Explain from the courses and bearings.",
        "Which COLREG situation applies to {who} and the other vessel in these reports, and why?",
    ),
    answers=(
        "This is a {situation} situation; the two pass {cpa_nm} nm apart at {cpa_time} UTC.",
        "{Situation}: {who} and {other} close to {cpa_nm} nm at {cpa_time} UTC.",
    ),
    reasoning=(
        "Comparing the courses {cog_a}° and {cog_b}°: {geometry}.",
        "From the two reports' courses ({cog_a}° and {cog_b}°) and the bearing between the vessels, {geometry}.",
    ),
    values=_values, plant=("cpa_nm", "number"),
))


def encounter_rule(params: dict[str, Any]) -> str:
    """The rule line of an encounter context: how CPA/TCPA are computed and the situation decided."""
    return (
        f"Close-quarters rule: each vessel's first report in this window at {params['encounter_min_sog_kn']:g} kn or more "
        f"is dead-reckoned at constant course and speed on a flat east/north plane ({NM_PER_DEG_LAT:.2f} nm per degree "
        f"of latitude, longitude scaled by the cosine of the mean latitude); the closest point of approach (CPA) and "
        f"the time to it (TCPA) count from the later of the two reports. A close-quarters situation: CPA at most "
        f"{params['encounter_cpa_nm']:g} nm within {params['encounter_tcpa_minutes']:g} minutes. COLREG situation: "
        f"head-on when the courses differ by {HEAD_ON_MIN_DEG:g} degrees or more; overtaking when they differ by less "
        f"than {OVERTAKING_MAX_DIFF_DEG:g} degrees and one vessel is more than 22.5 degrees abaft the other's beam "
        f"(relative bearing {ABAFT_BEAM[0]:g}-{ABAFT_BEAM[1]:g} degrees) when the CPA is "
        f"{params['encounter_tcpa_minutes']:g} minutes away; crossing otherwise."
    )


def _first_underway(rows: pd.DataFrame | None, min_sog_kn: float) -> pd.Series | None:
    if rows is None:
        return None
    underway = rows[(rows["sog_kn"] >= min_sog_kn) & rows["cog_deg"].notna()]
    return None if underway.empty else underway.iloc[0]


def _is_report(row: pd.Series | None, lat: float, lon: float, sog: float, cog: float) -> bool:
    return row is not None and all(
        math.isclose(float(a), float(b), abs_tol=1e-9) for a, b in ((row["lat"], lat), (row["lon"], lon),
                                                                      (row["sog_kn"], sog), (row["cog_deg"], cog)))


@register_builder("safety")
def encounter_candidates(inputs: CatalogueInputs) -> list[Seed]:
    encounters = inputs.fact("close_encounters")
    params = inputs.fact_params.get("close_encounters", {})
    if encounters.empty or not params:
        return []
    digest, tracks = inputs.fact_digests.get("close_encounters", ""), inputs.tracks
    bucket = pd.Timedelta(minutes=int(params["encounter_bucket_minutes"]))
    particulars = inputs.particulars()
    rule = encounter_rule(params)
    seeds = []
    for e in encounters.to_dict("records"):
        a, b = int(e["mmsi_a"]), int(e["mmsi_b"])
        start, end = pd.Timestamp(e["bucket"]), pd.Timestamp(e["bucket"]) + bucket
        rows_a, rows_b = tracks.window(a, start, end), tracks.window(b, start, end)
        n_rows = tracks.count(a, start, end) + tracks.count(b, start, end)
        if n_rows < 2 or n_rows > inputs.cfg.max_context_records:
            continue
        # the context must hold the two reports the query dead-reckoned, as each vessel's first underway one
        used_a = _first_underway(rows_a, float(params["encounter_min_sog_kn"]))
        used_b = _first_underway(rows_b, float(params["encounter_min_sog_kn"]))
        if not (_is_report(used_a, e["lat_a"], e["lon_a"], e["sog_a_kn"], e["cog_a_deg"])
                and _is_report(used_b, e["lat_b"], e["lon_b"], e["sog_b_kn"], e["cog_b_deg"])
                and max(used_a["ts"], used_b["ts"]) == pd.Timestamp(e["detected_at"])):
            continue
        b_from_a, a_from_b, situation = horizon_geometry(e, float(params["encounter_tcpa_minutes"]))
        if situation != e["situation"]:
            continue
        fact: dict[str, Any] = {
            "mmsi_a": a, "mmsi_b": b, "other_name": text_or_none(particulars.get(b, {}).get("vessel_name")),
            "situation": e["situation"], "cpa_nm": float(e["cpa_nm"]), "tcpa_minutes": float(e["tcpa_minutes"]),
            "cpa_time": iso(e["cpa_time"]), "detected_at": iso(e["detected_at"]),
            "report_a_time": iso(used_a["ts"]), "report_b_time": iso(used_b["ts"]),
            "sog_a_kn": float(e["sog_a_kn"]), "sog_b_kn": float(e["sog_b_kn"]),
            "cog_a_deg": float(e["cog_a_deg"]), "cog_b_deg": float(e["cog_b_deg"]),
            "course_difference_deg": float(e["course_difference_deg"]), "range_nm": float(e["range_nm"]),
            "bearing_deg": float(e["bearing_deg"]), "relative_bearing_deg": float(e["relative_bearing_deg"]),
            "b_from_a_deg": b_from_a, "a_from_b_deg": a_from_b,
            "cpa_limit_nm": float(params["encounter_cpa_nm"]), "tcpa_limit_minutes": float(params["encounter_tcpa_minutes"]),
        }
        grounding = _grounding(fact, start, end)
        vessel_name = text_or_none(particulars.get(a, {}).get("vessel_name"))
        spec = ContextSpec("encounter", a, iso(start), iso(end), extra=(("other_mmsi", b), ("rule", rule)))
        required = {
            "encounter_vessel": {"mmsi_b", "cpa_nm"},
            "encounter_courses": {"sog_a_kn", "sog_b_kn", "cog_a_deg", "cog_b_deg", "course_difference_deg"},
            "encounter_cpa": {"cpa_nm", "tcpa_minutes"},
            "encounter_situation": {"situation", "course_difference_deg", "cpa_nm", "cpa_time"},
        }
        for form, names in required.items():
            meta = FORMS[form]
            seeds.append(Seed(
                seed_id=seed_id(form, a, b, e["first_bucket"], e["source_hash"]),
                category=meta.category, difficulty=meta.difficulty, form=form, answerable=True,
                mmsi=a, asked_mmsi=a, vessel_name=vessel_name,
                vessel_type=vessel_type_name(particulars.get(a, {}).get("vessel_type")),
                window_start=iso(start), window_end=iso(end),
                fact_sql="sql/close_encounters.sql", fact_sql_digest=digest, fact_params=params, fact=fact,
                source_hash=e["source_hash"], context=spec, n_context_records=n_rows,
                grounding=[{**g, "required": g["name"] in names} for g in grounding],
                region=region_of(e["lat_a"], e["lon_a"]),
            ))
    return seeds


def _grounding(f: dict[str, Any], start: pd.Timestamp, end: pd.Timestamp) -> list[dict[str, Any]]:
    """Every value an encounter answer may state (the form marks the ones it must state)."""
    g = [
        {"name": "mmsi_a", "value": f["mmsi_a"], "kind": "id"},
        {"name": "mmsi_b", "value": f["mmsi_b"], "kind": "id"},
        {"name": "window_start", "value": iso(start), "kind": "time"},
        {"name": "window_end", "value": iso(end), "kind": "time"},
        {"name": "report_a_time", "value": f["report_a_time"], "kind": "time"},
        {"name": "report_b_time", "value": f["report_b_time"], "kind": "time"},
        {"name": "detected_at", "value": f["detected_at"], "kind": "time"},
        {"name": "cpa_time", "value": f["cpa_time"], "kind": "time"},
        {"name": "cpa_nm", "value": f["cpa_nm"], "kind": "distance_nm"},
        {"name": "cpa_limit_nm", "value": f["cpa_limit_nm"], "kind": "distance_nm", "role": "threshold"},
        # the CPA lies ahead of the reports, up to the TCPA limit past the window
        {"name": "tcpa_minutes", "value": f["tcpa_minutes"], "kind": "minutes", "role": "ahead"},
        {"name": "tcpa_limit_minutes", "value": f["tcpa_limit_minutes"], "kind": "minutes", "role": "threshold"},
        {"name": "sog_a_kn", "value": f["sog_a_kn"], "kind": "speed_kn"},
        {"name": "sog_b_kn", "value": f["sog_b_kn"], "kind": "speed_kn"},
        {"name": "cog_a_deg", "value": f["cog_a_deg"], "kind": "degrees"},
        {"name": "cog_b_deg", "value": f["cog_b_deg"], "kind": "degrees"},
        {"name": "course_difference_deg", "value": f["course_difference_deg"], "kind": "degrees"},
        {"name": "b_from_a_deg", "value": f["b_from_a_deg"], "kind": "degrees"},
        {"name": "a_from_b_deg", "value": f["a_from_b_deg"], "kind": "degrees"},
        {"name": "situation", "value": SITUATION_WORDS[f["situation"]], "kind": "label"},
    ]
    # the other two situations: an answer naming one of them contradicts the computed geometry
    g += [{"name": "other_situation", "value": word, "kind": "distractor"}
          for key, word in SITUATION_WORDS.items() if key != f["situation"]]
    # the rule's thresholds, which the worked geometry quotes
    g += [{"name": f"threshold_{i}", "value": v, "kind": "degrees", "role": "threshold"}
          for i, v in enumerate((HEAD_ON_MIN_DEG, OVERTAKING_MAX_DIFF_DEG, 22.5, *ABAFT_BEAM))]
    if f["other_name"]:
        g.append({"name": "other_name", "value": f["other_name"], "kind": "name", "mmsi": f["mmsi_b"]})
    return g


@register_renderer("encounter")
def render_encounter(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    other = int(spec.get("other_mmsi"))
    parts = [r for r in (inputs.tracks.window(m, spec.start, spec.end, spec.inclusive_end) for m in (spec.mmsi, other))
             if r is not None]
    rows = pd.concat(parts).sort_values(["ts", "mmsi", "row_hash"])
    table = inputs.fact("vessel_particulars")
    both = table[table["mmsi"].isin([spec.mmsi, other])] if len(table) else table
    particulars = {int(r["mmsi"]): r for r in both.to_dict("records")}

    def label(mmsi: int) -> str:
        p = particulars.get(mmsi, {})
        name = text_or_none(p.get("vessel_name"))
        return f"MMSI {mmsi} ({name + ', ' if name else ''}{vessel_type_name(p.get('vessel_type'))})"

    start, end = pd.Timestamp(spec.start), pd.Timestamp(spec.end)
    lines = [f"AIS position reports of vessel {label(spec.mmsi)} and vessel {label(other)}, "
             f"{start:%Y-%m-%d} {start:%H:%M}-{end:%H:%M} UTC:"]
    lines += report_lines(rows, fmt, with_mmsi=True)
    lines.append(spec.get("rule"))
    return "\n".join(lines)
