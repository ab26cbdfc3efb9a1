"""Vessel identity & particulars (DESIGN.md category 1): ship type, name / call sign / IMO, size,
flag state from the MMSI's MID (sql/vessel_particulars.sql), and identity conflicts: one MMSI
heard at two places at once (sql/identity_conflicts.sql).

Particulars questions are asked on a "static" context: the static and voyage fields the vessel
broadcast (the same in every report shown, and equal to what it broadcast most often) with a few
of its position reports, plus excerpts of the two reference tables the answers look up (ITU MID
allocations, AIS ship-type codes) with a few other entries, so the lookup is shown, not given away.
Identity conflicts are asked on every report received (kind "received_track", tasks/catalogue/
anomalies.py): the second transmitter's reports are the ones staging set aside.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from tasks.anomalies import MID_FLAGS_CSV, read_vessel_type_max_speed
from tasks.catalogue.anomalies import (
    at_or_before, ground, hhmm, make_seed, one_day, received_tracks, row_hash_of, word_name,
)
from tasks.catalogue.base import (
    CatalogueInputs, ContextSpec, Form, Seed, iso, read_positions, region_of, register_builder, register_form,
    register_renderer, report_lines, text_or_none,
)

# static and voyage fields a static context shows, as staged (NOAA: on every position report)
STATIC_COLUMNS = ("vessel_name", "call_sign", "imo", "vessel_type", "length_m", "width_m", "draft_m",
                  "transceiver_class", "destination")
# the fields vessel_particulars reports as what the vessel broadcast most often; a context is only
# used when its reports broadcast exactly these values
MODE_FIELDS = ("vessel_name", "imo", "call_sign", "vessel_type", "length_m", "width_m", "transceiver_class")
STATIC_LABELS = {"vessel_name": "name", "transceiver_class": "class", "vessel_type": "ship_type"}
STATIC_REPORTS = 5        # position reports shown under the static data
REFERENCE_DISTRACTORS = 4  # other entries shown beside the vessel's in each reference excerpt
CONFLICT_MARGIN_REPORTS = 2
MIN_LENGTH_M = 3.0         # shorter static lengths are set-up errors, not hulls
IMO_RE = re.compile(r"(?:IMO)?\s*(\d{7})")


def _plain(value: Any) -> Any:
    """A JSON- and hash-friendly scalar: None for not available, int for whole codes."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


@lru_cache(maxsize=1)
def _mid_table() -> pd.DataFrame:
    return pd.read_csv(MID_FLAGS_CSV, dtype={"mid": int, "flag_country": str, "flag_iso2": str})


@lru_cache(maxsize=1)
def _type_table() -> pd.DataFrame:
    return read_vessel_type_max_speed()


def _unrelated(a: str, b: str) -> bool:
    return a.lower() not in b.lower() and b.lower() not in a.lower()


@lru_cache(maxsize=None)
def _other_states(country: str) -> tuple[tuple[int, str], ...]:
    """One (MID, state) per state whose name neither contains nor is contained in `country`."""
    table = _mid_table()
    table = table[[_unrelated(c, country) for c in table["flag_country"]]].drop_duplicates("flag_country")
    return tuple((int(m), str(c)) for m, c in zip(table["mid"], table["flag_country"]))


@lru_cache(maxsize=None)
def _type_ranges(code: int) -> tuple[tuple[tuple[int, int, str], ...], tuple[tuple[int, int, str], ...]]:
    """The ship-type ranges holding `code`, and the ranges with unrelated names ("other" left out)."""
    table = _type_table()
    ranges = [(int(a), int(b), str(n)) for a, b, n in zip(table["type_from"], table["type_to"], table["type_name"])]
    own = tuple(r for r in ranges if r[0] <= code <= r[1])
    others = tuple(r for r in ranges if r not in own and r[2] != "other" and all(_unrelated(r[2], o[2]) for o in own))
    return own, others


def _pick(rng: np.random.Generator, items: tuple, k: int) -> list:
    return [items[i] for i in sorted(rng.choice(len(items), size=min(k, len(items)), replace=False))]


def mid_excerpt(mmsi: int, country: str) -> tuple[tuple[int, str], ...]:
    """The vessel's MID with REFERENCE_DISTRACTORS other states' MIDs (stable per MMSI), by MID."""
    picks = _pick(np.random.default_rng(int(mmsi)), _other_states(country), REFERENCE_DISTRACTORS)
    return tuple(sorted([(int(mmsi) // 1_000_000, country)] + picks))


def type_excerpt(mmsi: int, code: int) -> tuple[tuple[int, int, str], ...]:
    """The ship-type range holding `code` with a few other ranges (stable per MMSI), by code."""
    own, others = _type_ranges(int(code))
    return tuple(sorted(list(own) + _pick(np.random.default_rng(int(mmsi) + 1), others, REFERENCE_DISTRACTORS - 1)))


def _code_range(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


@register_renderer("static")
def render_static(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    """Static data block, the position reports it was broadcast with, then the reference excerpts."""
    rows = inputs.tracks.window(spec.mmsi, spec.start, spec.end, spec.inclusive_end)
    static = dict(spec.get("static"))
    day = pd.Timestamp(rows["ts"].iloc[0]).strftime("%Y-%m-%d")
    shown = {STATIC_LABELS.get(k, k): v for k, v in static.items()}
    lines = [f"AIS records of MMSI {spec.mmsi}, {day} UTC.", "Static and voyage data (the same in every report below):"]
    if fmt == "table":
        lines.append("|".join(shown))
        lines.append("|".join("NA" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)) for v in shown.values()))
    else:
        lines.append(json.dumps(shown))
    lines.append("Position reports:")
    lines += report_lines(rows, fmt, with_mmsi=False)
    mids = "; ".join(f"{m} {c}" for m, c in spec.get("mid_reference", ()))
    if mids:
        lines.append(f"ITU MID allocations (excerpt): {mids}")
    types = "; ".join(f"{_code_range(a, b)} {n}" for a, b, n in spec.get("type_reference", ()))
    if types:
        lines.append(f"AIS ship type codes (excerpt): {types}")
    return "\n".join(lines)


def static_contexts(inputs: CatalogueInputs, particulars: pd.DataFrame) -> pd.DataFrame:
    """Per vessel, the STATIC_REPORTS reports its static context shows: its first ones, else its
    last ones, when each of them broadcast the same static fields, equal to what the vessel
    broadcast most often (vessel_particulars), on one UTC day. One row per vessel that has such
    reports: mmsi, start, end (their first and last time), lat, lon (the first one's position) and
    the STATIC_COLUMNS they broadcast."""
    table = read_positions(inputs.positions_path, ["mmsi", "ts", "row_hash", "lat", "lon", *STATIC_COLUMNS])
    table = table.sort_values(["mmsi", "ts", "row_hash"], ignore_index=True)
    rank = table.groupby("mmsi").cumcount()
    size = table.groupby("mmsi")["mmsi"].transform("size")
    usual = particulars.drop_duplicates("mmsi").set_index("mmsi")
    picked = []
    for edge, rows in enumerate((table[rank < STATIC_REPORTS], table[rank >= size - STATIC_REPORTS])):
        grouped = rows.groupby("mmsi")
        fields = grouped[list(STATIC_COLUMNS)]
        span = grouped["ts"].agg(["min", "max", "size"])
        ok = (fields.nunique(dropna=False) == 1).all(axis=1) & (span["size"] >= 2)
        ok &= span["min"].dt.normalize() == span["max"].dt.normalize()
        first = fields.first()
        expected = usual.reindex(first.index)
        for column in MODE_FIELDS:  # NULL equals NULL here: both say "not broadcast"
            a, b = first[column], expected[column]
            ok &= ((a == b).fillna(False).astype(bool) | (a.isna() & b.isna())) & b.index.isin(usual.index)
        where = grouped[["lat", "lon"]].first()  # the first report's position, for the region
        picked.append(first[ok].assign(start=span["min"], end=span["max"], lat=where["lat"], lon=where["lon"], edge=edge))
    out = pd.concat(picked).rename_axis("mmsi").reset_index()
    return out.sort_values(["mmsi", "edge"]).drop_duplicates("mmsi").reset_index(drop=True)


def plausible_size(length_m: float | None, width_m: float | None) -> bool:
    """Dimensions worth asking about: both sent, at least MIN_LENGTH_M long, narrower than long
    (feeds carry 1 m hulls and beams wider than the length: transponder set-up errors)."""
    return bool(length_m and width_m and length_m >= MIN_LENGTH_M and 0 < width_m < length_m)


def _identity_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    out = {"mmsi": str(f["mmsi"]), "mid": str(f["mid"])}
    for key in ("vessel_name", "call_sign", "imo_number", "country", "type_name"):
        out[key] = f.get(key) or ""
    out["type_code"] = "" if f.get("vessel_type") is None else str(f["vessel_type"])
    for key in ("length_m", "width_m"):
        out[key] = "" if f.get(key) is None else f"{f[key]:g}"
    return out


register_form(Form(
    "ship_type", "identity", "easy",
    questions=(
        "What type of vessel is {who}?",
        "What kind of ship is {who}, according to its AIS static data?",
        "Which AIS ship type does {who} broadcast, and what does it mean?",
        "Is {who} a cargo ship, a tanker, or something else?",
    ),
    answers=(
        "{Who} broadcasts AIS ship type {type_code}, which means {type_name}.",
        "According to its static data, {who} is a vessel of type {type_name} (AIS ship type code {type_code}).",
    ),
    reasoning=(
        "The static data gives ship type code {type_code}; the ship-type table lists that code as {type_name}.",
        "Looking the ship_type field up in the AIS ship-type codes:",
    ),
    values=_identity_values, plant=("type_code", "count"),
    unanswerable_kinds=("vessel",),
))
register_form(Form(
    "vessel_identifiers", "identity", "easy",
    questions=(
        "What name, call sign and IMO number does {who} broadcast?",
        "Identify {who}: give its name, call sign and IMO number.",
        "Which ship is {who}? State its name, radio call sign and IMO number.",
    ),
    answers=(
        "{Who} is {vessel_name}, call sign {call_sign}, IMO number {imo_number}.",
        "MMSI {mmsi} belongs to {vessel_name} (call sign {call_sign}, IMO {imo_number}).",
    ),
    reasoning=(
        "The static data block lists the name, the call sign and the IMO number the vessel broadcasts.",
        "Reading the name, call_sign and imo fields of the static data:",
    ),
    values=_identity_values, plant=("imo_number", "count"),
    unanswerable_kinds=("vessel",),
))
register_form(Form(
    "vessel_size", "identity", "medium",
    questions=(
        "How long and how wide is {who}?",
        "What are the length and the beam of {who}?",
        "Give the dimensions of {who} from its static data.",
    ),
    answers=(
        "{Who} is {length_m} metres long with a beam of {width_m} metres.",
        "According to its static data, {who} measures {length_m} m in length and {width_m} m in beam.",
    ),
    reasoning=(
        "AIS static data gives the length (bow to stern) and the beam (side to side) in metres.",
        "Reading the length_m and width_m fields of the static data:",
    ),
    values=_identity_values, plant=("length_m", "number"),
    unanswerable_kinds=("vessel",),
))
register_form(Form(
    "flag_state", "identity", "medium",
    questions=(
        "Which flag state does {who} fly, judging by its MMSI?",
        "In which country is {who} registered, according to its MMSI?",
        "From its MMSI, what is the flag of {who}?",
    ),
    answers=(
        "{Who} flies the flag of {country} (MID {mid}).",
        "Its MMSI begins with {mid}, the MID allocated to {country}, so {who} is registered in {country}.",
    ),
    reasoning=(
        "The first three digits of a ship's MMSI are its Maritime Identification Digits (MID): here {mid}, which the ITU allocates to {country}.",
        "MMSI {mmsi} starts with MID {mid}; looking MID {mid} up in the ITU allocations gives {country}.",
    ),
    values=_identity_values, plant=("mid", "count"),
    unanswerable_kinds=(),
))
register_form(Form(
    "vessel_profile", "identity", "hard",
    questions=(
        "Summarise {who}: its flag state, vessel type and size.",
        "Describe {who} from its AIS identity: which flag, what type of vessel, and how big is it?",
        "What do the MMSI and the static data of {who} say about its flag, type and dimensions?",
    ),
    answers=(
        "{Who} flies the flag of {country} (MID {mid}); it is AIS ship type {type_code} ({type_name}), {length_m} metres long and {width_m} metres wide.",
        "Flag: {country}, from MID {mid}. Type: {type_name} (ship type code {type_code}). Size: {length_m} m long, {width_m} m beam.",
    ),
    reasoning=(
        "The MMSI's first three digits (MID {mid}) give the flag state, ship type code {type_code} gives the type, and the static data gives the dimensions.",
        "Three lookups: MID {mid} in the ITU allocations, ship type {type_code} in the type codes, then length and beam from the static data.",
    ),
    values=_identity_values, plant=("length_m", "number"),
    unanswerable_kinds=(),
))


@register_builder("identity")
def particulars_candidates(inputs: CatalogueInputs) -> list[Seed]:
    particulars = inputs.fact("vessel_particulars")
    if particulars.empty:
        return []
    contexts = static_contexts(inputs, particulars)
    usual = {int(p["mmsi"]): p for p in particulars.to_dict("records")}
    seeds = []
    for c in contexts.to_dict("records"):
        mmsi, p = int(c["mmsi"]), usual[int(c["mmsi"])]
        static = {column: _plain(c[column]) for column in STATIC_COLUMNS}
        start, end = iso(c["start"]), iso(c["end"])
        n_rows = inputs.tracks.count(mmsi, start, end, inclusive_end=True)
        if not 2 <= n_rows <= inputs.cfg.max_context_records:
            continue
        code = None if _plain(p["vessel_type"]) is None else int(p["vessel_type"])
        known_type = code is not None and bool(_type_ranges(int(code))[0])
        country = text_or_none(p.get("flag_country"))
        imo = IMO_RE.fullmatch(str(static["imo"] or ""))
        fact = {
            "mmsi": mmsi, "mid": int(p["mid"]), "country": country, "vessel_name": static["vessel_name"],
            "call_sign": static["call_sign"], "imo": static["imo"], "imo_number": imo.group(1) if imo else None,
            "vessel_type": code, "type_name": text_or_none(p.get("vessel_type_name")) if known_type else None,
            "length_m": static["length_m"], "width_m": static["width_m"], "transceiver_class": static["transceiver_class"],
        }
        mids = mid_excerpt(mmsi, country) if country else ()
        types = type_excerpt(mmsi, code) if known_type else ()
        spec = ContextSpec(
            "static", mmsi, start, end, True, None,
            (("static", tuple(static.items())), ("mid_reference", mids), ("type_reference", types)),
        )
        base = [ground("mmsi", mmsi, "id")] + [
            ground(k, word_name(fact[k]), "name") for k in ("vessel_name", "call_sign") if word_name(fact[k])
        ] + [ground("other_flag", state, "distractor") for _, state in mids if state != country] + [
            ground("other_type", n, "distractor") for _, _, n in types if n != fact["type_name"]
        ]
        typed = [ground("type_name", fact["type_name"], "label", True), ground("type_code", code, "count")]
        flag = [ground("country", country, "label", True), ground("mid", fact["mid"], "count")]
        size = [ground("length_m", fact["length_m"], "metres", True), ground("width_m", fact["width_m"], "metres", True)]
        per_form: dict[str, list[dict[str, Any]]] = {}
        if fact["type_name"]:
            per_form["ship_type"] = typed
        if word_name(fact["vessel_name"]) and word_name(fact["call_sign"]) and fact["imo_number"]:
            per_form["vessel_identifiers"] = [
                ground("vessel_name", fact["vessel_name"], "name", True),
                ground("call_sign", fact["call_sign"], "name", True),
                ground("imo_number", int(fact["imo_number"]), "count", True),
            ]
        sized = plausible_size(fact["length_m"], fact["width_m"])
        if sized:
            per_form["vessel_size"] = size
        if country:
            per_form["flag_state"] = flag
        if fact["type_name"] and country and sized:
            per_form["vessel_profile"] = flag + typed + size
        source_hash = str(p["source_hash"])
        region = region_of(c["lat"], c["lon"])
        for form, values in per_form.items():
            # the name is asked for, so the question names the vessel by MMSI only (vessel_name None)
            seeds.append(make_seed(form, inputs, "vessel_particulars", mmsi, mmsi, spec, n_rows, fact, source_hash,
                                   base + values, named=False, region=region))
    return seeds


# ---------------------------------------------------------------------------------------------
# identity conflicts: one MMSI, two transmitters

def _conflict_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    return {
        "mmsi": str(f["mmsi"]), "conflict_start": hhmm(f["conflict_start"]), "conflict_end": hhmm(f["conflict_end"]),
        "n_reports_b": str(f["n_reports_b"]), "separation_nm": f"{f['separation_nm']:.1f}",
        "lat_a": f"{f['lat_a']:.5f}", "lon_a": f"{f['lon_a']:.5f}", "lat_b": f"{f['lat_b']:.5f}", "lon_b": f"{f['lon_b']:.5f}",
        "max_speed": f"{f['identity_max_speed_kn']:g}", "min_separation": f"{f['identity_min_separation_nm']:g}",
    }


register_form(Form(
    "conflict_reports", "identity", "medium",
    questions=(
        "How many reports of {who} come from a second transmitter using the same MMSI?",
        "Some reports of {who} are far away from its track. How many are there, and over what period?",
        "Count the reports of {who} that cannot come from the vessel itself.",
    ),
    answers=(
        "{n_reports_b} reports, from {conflict_start} to {conflict_end} UTC, come from a second transmitter broadcasting MMSI {mmsi}.",
        "Between {conflict_start} and {conflict_end} UTC, {n_reports_b} reports place {who} somewhere else: a second transmitter uses its MMSI.",
    ),
    reasoning=(
        "Reports that alternate with the vessel's track but lie far from it come from another transmitter; counting those:",
        "Separating the reports that continue the vessel's track from those at the other place, and counting the latter:",
    ),
    values=_conflict_values, plant=("n_reports_b", "count"),
))
register_form(Form(
    "identity_conflict", "identity", "hard",
    questions=(
        "The reports of {who} jump between two places. When was the second transmitter heard, and how far apart are the two positions?",
        "Is more than one transmitter using the MMSI of {who}? If so, when, and how far apart are they?",
        "Check the identity of {who}: is its MMSI reported at two places at once? Give the period and the distance.",
    ),
    answers=(
        "From {conflict_start} to {conflict_end} UTC a second transmitter broadcasts MMSI {mmsi}; its first report ({lat_b}, {lon_b}) is {separation_nm} nautical miles from the vessel's last position before it ({lat_a}, {lon_a}).",
        "Two transmitters share the MMSI of {who} between {conflict_start} and {conflict_end} UTC; the second one was first heard {separation_nm} nautical miles away from the vessel.",
    ),
    reasoning=(
        "Consecutive reports {separation_nm} nautical miles apart, minutes from each other, would need far more than {max_speed} knots, so they come from two transmitters.",
        "A step of at least {min_separation} nautical miles faster than {max_speed} knots, back and forth, means the MMSI is broadcast from two places.",
    ),
    values=_conflict_values, plant=("separation_nm", "number"),
))


@register_builder("identity")
def conflict_candidates(inputs: CatalogueInputs) -> list[Seed]:
    conflicts = inputs.fact("identity_conflicts")
    if conflicts.empty:
        return []
    received = received_tracks(inputs)
    params = inputs.fact_params.get("identity_conflicts", {})
    max_speed = float(params.get("identity_max_speed_kn", 60.0))
    min_sep = float(params.get("identity_min_separation_nm", 10.0))
    rule = (f"Two consecutive reports of one MMSI at least {min_sep:g} nm apart that would need more than "
            f"{max_speed:g} kn, switching back and forth, mean two transmitters broadcast the same MMSI.")
    cap = inputs.cfg.max_context_records
    seeds = []
    for c in conflicts.to_dict("records"):
        mmsi = int(c["mmsi"])
        track = received.by_mmsi.get(mmsi)
        if track is None:
            continue
        first_b = track.index[(track["ts"] == pd.Timestamp(c["start"])) & np.isclose(track["lat"], c["lat_b"])
                              & np.isclose(track["lon"], c["lon_b"])]
        if len(first_b) != 1 or int(first_b[0]) == 0:
            continue
        k = int(first_b[0])
        # the vessel's own report just before the second transmitter's first one is in the records
        if not (np.isclose(track["lat"].iloc[k - 1], c["lat_a"]) and np.isclose(track["lon"].iloc[k - 1], c["lon_a"])):
            continue
        last = at_or_before(track, c["end"])
        lo, hi = max(0, k - 1 - CONFLICT_MARGIN_REPORTS), min(len(track) - 1, last + CONFLICT_MARGIN_REPORTS)
        start, end = iso(track["ts"].iloc[lo]), iso(track["ts"].iloc[hi])
        rows = received.window(mmsi, start, end, inclusive_end=True)
        if not 2 <= len(rows) <= cap or not one_day(rows):
            continue
        fact = {
            "mmsi": mmsi, "conflict_start": iso(c["start"]), "conflict_end": iso(c["end"]),
            "n_reports_b": int(c["n_reports_b"]), "n_reports": int(c["n_reports"]),
            "separation_nm": float(c["separation_nm"]), "minutes": float(c["minutes"]),
            "lat_a": float(c["lat_a"]), "lon_a": float(c["lon_a"]), "lat_b": float(c["lat_b"]), "lon_b": float(c["lon_b"]),
            "identity_max_speed_kn": max_speed, "identity_min_separation_nm": min_sep,
        }
        spec = ContextSpec("received_track", mmsi, start, end, True, None, (("rule", rule),))
        times = [ground("conflict_start", fact["conflict_start"], "time"),
                 ground("conflict_end", fact["conflict_end"], "time")]
        base = [ground("mmsi", mmsi, "id"), ground("max_speed", max_speed, "speed_kn", role="threshold"),
                ground("min_separation", min_sep, "distance_nm", role="threshold")]
        per_form = {
            "conflict_reports": [ground("n_reports_b", fact["n_reports_b"], "count", True)] + times,
            "identity_conflict": [
                # the two transmitters' positions are as reported, miles apart on purpose
                ground("separation_nm", fact["separation_nm"], "distance_nm", True, role="reported"),
                ground("conflict_start", fact["conflict_start"], "time", True),
                ground("conflict_end", fact["conflict_end"], "time", True),
            ] + [ground(k, fact[k], k[:3], role="reported") for k in ("lat_a", "lon_a", "lat_b", "lon_b")],
        }
        source_hash = row_hash_of(fact)
        for form, values in per_form.items():
            seeds.append(make_seed(form, inputs, "identity_conflicts", c["start"], mmsi, spec, len(rows), fact,
                                   source_hash, base + values))
    return seeds

