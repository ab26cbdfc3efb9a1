"""Port & area activity (DESIGN.md category 3): port calls with arrival, departure and dwell (from
sql/port_calls.sql), the anchorage wait against the berth stay of a call (sql/port_stays.sql), and
which vessels were in a port in a short window (an area question over every vessel's reports).

A call too long for generate.max_context_records is shown thinned: every report at or next to a
change (the call's and each stay's first and last report) plus one report per slot between, so
each asked time and duration can still be read off the context."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd

from tasks.catalogue.base import (
    CatalogueInputs, ContextSpec, FORMS, Form, Seed, combined_hash, format_track, hhmm, iso, nearby_ports,
    region_of, register_builder, register_form, register_renderer, report_lines, seed_id, text_or_none,
    vessel_type_name,
)
from tasks.geo import distance_nm

PORT_CONTEXT_NM = 10.0  # ports listed beside a port-call context
CALL_MARGIN = pd.Timedelta(minutes=10)  # reports shown before a whole call's arrival and after its departure
THIN_MINUTES = (10, 15, 20, 30, 60, 120)  # thinned call: slot lengths tried, shortest first, until it fits
IN_PORT_WINDOWS = (15, 5)  # vessels in port: window lengths (minutes) tried, longest first, until it fits



def _values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    return {
        "port_name": f["port_name"], "locode": f["locode"], "arrival": hhmm(f["arrival"]),
        "departure": hhmm(f["departure"]), "dwell_minutes": f"{f['dwell_minutes']:.0f}",
        "dwell_hours": f"{f['dwell_minutes'] / 60:.1f}",
    }


register_form(Form(
    "arrival", "port_activity", "easy",
    questions=(
        "At which port did {who} stop, and when did it arrive?",
        "When did {who} arrive in port, and which port was it?",
        "Identify the port {who} called at and its arrival time.",
        "Where did {who} come to a stop, and at what time?",
    ),
    answers=(
        "{Who} stopped at {port_name} ({locode}); its first stopped report there is at {arrival} UTC.",
        "{Who} arrived at {port_name} ({locode}) at {arrival} UTC.",
    ),
    reasoning=(
        "The arrival is the first report at or below the stopped speed inside the port radius.",
        "Looking for the first stopped report close to one of the listed ports:",
    ),
    values=_values, plant=("arrival", "time"),
))
register_form(Form(
    "departure", "port_activity", "medium",
    questions=(
        "When did {who} leave port, and from which port?",
        "At what time did {who} depart, and which port was it leaving?",
        "From which port did {who} get underway, and when?",
        "Identify the port {who} departed from and the departure time.",
    ),
    answers=(
        "{Who} departed from {port_name} ({locode}); its last stopped report there is at {departure} UTC.",
        "{Who} left {port_name} ({locode}) at {departure} UTC.",
    ),
    reasoning=(
        "The departure is the last stopped report inside the port radius before the vessel gets underway.",
        "Finding the last report at or below the stopped speed near the port:",
    ),
    values=_values, plant=("departure", "time"),
))
register_form(Form(
    "dwell", "port_activity", "hard",
    questions=(
        "How long did {who} stay in port, and which port was it?",
        "What was the dwell time of {who} at the port in these reports?",
        "For how long was {who} stopped at the port, from arrival to departure?",
        "How much time did {who} spend in port during this call?",
    ),
    answers=(
        "{Who} stayed at {port_name} ({locode}) from {arrival} to {departure} UTC, a dwell of {dwell_minutes} minutes (about {dwell_hours} hours).",
        "The call at {port_name} ({locode}) lasted {dwell_minutes} minutes, from arrival at {arrival} to departure at {departure} UTC.",
    ),
    reasoning=(
        "Dwell is the time from the first to the last stopped report of the call.",
        "Subtracting the arrival time from the departure time gives the dwell.",
    ),
    values=_values, plant=("dwell_minutes", "minutes"),
))


def _span(stay: dict[str, Any]) -> str:
    return f"{hhmm(stay['start'])} to {hhmm(stay['end'])} UTC ({stay['minutes']:.0f} minutes)"


def _wait_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    return {
        "port_name": f["port_name"], "locode": f["locode"], "wait_start": hhmm(f["wait_start"]),
        "wait_end": hhmm(f["wait_end"]), "wait_minutes": f"{f['wait_minutes']:.0f}",
        "berth_start": hhmm(f["berth_start"]), "berth_nm": f"{f['berth_radius_nm']:.1f}",
    }


def _split_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    return {
        "port_name": f["port_name"], "locode": f["locode"],
        "anchorage_minutes": f"{f['anchorage_minutes']:.0f}", "berth_minutes": f"{f['berth_minutes']:.0f}",
        "difference_minutes": f"{abs(f['berth_minutes'] - f['anchorage_minutes']):.0f}",
        "longer": "berth stay" if f["berth_minutes"] > f["anchorage_minutes"] else "anchorage wait",
        "anchorage_spans": "; ".join(_span(s) for s in f["stays"] if s["kind"] == "anchorage"),
        "berth_spans": "; ".join(_span(s) for s in f["stays"] if s["kind"] == "berth"),
    }


def _in_port_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    mmsis = [str(m) for m in f["mmsis"]]
    listed = mmsis[0] if len(mmsis) == 1 else ", ".join(mmsis[:-1]) + " and " + mmsis[-1]
    one = f["n_vessels"] == 1
    return {
        "port_name": f["port_name"], "locode": f["locode"], "n_vessels": str(f["n_vessels"]), "mmsi_list": listed,
        "vessels_were": "vessel was" if one else "vessels were", "vessel_noun": "vessel" if one else "vessels",
        "stopped_kn": f"{f['stopped_max_sog_kn']:.1f}",
    }


register_form(Form(
    "anchorage_wait", "port_activity", "medium",
    questions=(
        "Did {who} wait at anchor before berthing, and for how long?",
        "How long did {who} wait at the anchorage before going to its berth?",
        "Before it berthed, how long was {who} at anchor, and when did the wait start and end?",
        "For how many minutes did {who} lie at anchor before moving to its berth on {day}?",
    ),
    answers=(
        "Yes. {Who} waited at the anchorage of {port_name} ({locode}) from {wait_start} to {wait_end} UTC, {wait_minutes} minutes, before berthing at {berth_start} UTC.",
        "{Who} lay at anchor off {port_name} ({locode}) for {wait_minutes} minutes ({wait_start} to {wait_end} UTC); its first report at the berth is at {berth_start} UTC.",
    ),
    reasoning=(
        "Stopped reports with status at anchor, or farther than {berth_nm} nm from the port point, are at the anchorage; the wait runs from the first to the last of them before the berth stay.",
        "The anchorage stay is the run of stopped reports before the vessel shifts to the berth; it lasts from its first to its last report.",
    ),
    values=_wait_values, plant=("wait_minutes", "minutes"),
))
register_form(Form(
    "anchorage_vs_berth", "port_activity", "hard",
    questions=(
        "During this port call, how long was {who} at anchor and how long at the berth?",
        "Compare the time {who} spent at the anchorage with its time at the berth during this call.",
        "Split the port call of {who} into anchorage time and berth time: which was longer, and by how much?",
        "How much of its call on {day} did {who} spend at anchor, and how much alongside the berth?",
    ),
    answers=(
        "At {port_name} ({locode}) {who} spent {anchorage_minutes} minutes at anchor and {berth_minutes} minutes at the berth; the {longer} was longer by {difference_minutes} minutes.",
        "{Who} was at the anchorage of {port_name} ({locode}) for {anchorage_minutes} minutes and at the berth for {berth_minutes} minutes, so the {longer} lasted {difference_minutes} minutes longer.",
    ),
    reasoning=(
        "Anchorage stays: {anchorage_spans}. Berth stays: {berth_spans}.",
        "Each stay runs from its first to its last stopped report, and the stays of each kind are added up: at anchor {anchorage_spans}; at the berth {berth_spans}.",
    ),
    values=_split_values, plant=("berth_minutes", "minutes"),
))
register_form(Form(
    "vessels_in_port", "port_activity", "easy",
    questions=(
        "Which vessels were in port between {start} and {end} UTC on {day}?",
        "According to these reports, which vessels were in port during {start}-{end} UTC?",
        "List the vessels that were in port here between {start} and {end} UTC.",
        "Between {start} and {end} UTC, which ships were in port at the port shown?",
    ),
    answers=(
        "{n_vessels} {vessels_were} in port at {port_name} ({locode}) between {start} and {end} UTC: {mmsi_list}.",
        "In port at {port_name} ({locode}) from {start} to {end} UTC: {mmsi_list} ({n_vessels} {vessel_noun} in all).",
    ),
    reasoning=(
        "A vessel counts as in port when one of its reports here is at or below {stopped_kn} knots (or has SOG NA and status at anchor or moored); checking each MMSI in turn:",
        "Grouping the reports by MMSI and keeping the vessels with a stopped report:",
    ),
    values=_in_port_values, plant=("n_vessels", "count"),
))


def port_call_rule(params: dict[str, Any]) -> str | None:
    if not params:
        return None
    return (f"A port call runs from the first to the last report at or below "
            f"{params['stopped_max_sog_kn']:g} kn within {params['port_radius_nm']:g} nm of a port.")


def stay_rule(params: dict[str, Any]) -> str | None:
    if not params:
        return None
    return (f"During a call a stopped report is at the berth if its status is moored, at the anchorage if at anchor, "
            f"otherwise at the anchorage when farther than {params['berth_radius_nm']:g} nm from the port point, else at "
            f"the berth; a stay is a run of consecutive stopped reports of one kind, from its first to its last report.")


def thinned_rows(rows: pd.DataFrame, start: Any, end: Any, keep: tuple[str, ...], thin_minutes: int) -> pd.DataFrame:
    """A long call in few records: every report at a key time (a call's or stay's first or last
    report) and the reports either side of it, so each change is visible, plus the first report of
    every thin_minutes slot from start, so the stops between are shown too."""
    ts = rows["ts"].to_numpy()
    shown = np.zeros(len(rows), dtype=bool)
    if not len(rows):
        return rows
    shown[[0, -1]] = True
    for t in keep:
        at = np.datetime64(pd.Timestamp(t))
        lo, hi = np.searchsorted(ts, at, side="left"), np.searchsorted(ts, at, side="right")
        shown[max(lo - 1, 0): min(hi + 1, len(rows))] = True
    slots = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=f"{thin_minutes}min").to_numpy()
    first = np.searchsorted(ts, slots, side="left")
    shown[first[first < len(rows)]] = True
    return rows[shown]


@register_renderer("call_track")
def render_call_track(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    rows = inputs.tracks.window(spec.mmsi, spec.start, spec.end, spec.inclusive_end)
    shown = thinned_rows(rows, spec.start, spec.end, spec.get("keep"), spec.get("thin_minutes"))
    nearby = nearby_ports(inputs.ports, *spec.ports_near, radius_nm=float(spec.get("ports_radius_nm", PORT_CONTEXT_NM)))
    note = (f"Reports shown: {len(shown)} of {len(rows)}: each report at or next to the start or end of the call "
            f"or of a stay, and otherwise the first report of every {spec.get('thin_minutes')} minutes.")
    return format_track(shown, spec.mmsi, seed.vessel_name, seed.vessel_type, fmt, nearby, f"{spec.get('rule')} {note}")


def _call_context(inputs: CatalogueInputs, c: Any, call_stays: list[dict[str, Any]], port_at: tuple[float, float],
                  rule: str | None) -> tuple[ContextSpec, int] | None:
    """The whole call as one context: all its reports when they fit, else a thinned track."""
    start, end = pd.Timestamp(c.arrival) - CALL_MARGIN, pd.Timestamp(c.departure) + CALL_MARGIN
    extra: tuple[tuple[str, Any], ...] = (("ports_radius_nm", PORT_CONTEXT_NM), ("rule", rule))
    n_rows = inputs.tracks.count(c.mmsi, start, end, inclusive_end=True)
    if n_rows <= inputs.cfg.max_context_records:
        spec = ContextSpec("track", int(c.mmsi), iso(start), iso(end), True, port_at, extra)
        return (spec, n_rows) if n_rows >= 2 else None
    rows = inputs.tracks.window(c.mmsi, start, end, inclusive_end=True)
    keep = tuple(sorted({pd.Timestamp(t).isoformat() for t in [c.arrival, c.departure]
                         + [s[k] for s in call_stays for k in ("start", "end")]}))
    for minutes in THIN_MINUTES:
        n_shown = len(thinned_rows(rows, start, end, keep, minutes))
        if n_shown <= inputs.cfg.max_context_records:
            spec = ContextSpec("call_track", int(c.mmsi), iso(start), iso(end), True, port_at,
                               extra + (("keep", keep), ("thin_minutes", minutes)))
            return spec, n_shown
    return None


def _stay_forms(call_stays: list[dict[str, Any]], berth_radius_nm: float) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Fact and grounding of the stay forms a whole call supports (none without both kinds)."""
    kinds = [s["kind"] for s in call_stays]
    if "anchorage" not in kinds or "berth" not in kinds:
        return {}
    forms = {}
    stays = [{"kind": s["kind"], "start": iso(s["start"]), "end": iso(s["end"]), "minutes": float(s["minutes"])} for s in call_stays]
    if kinds[0] == "anchorage" and kinds[1] == "berth":
        wait, berth = stays[0], stays[1]
        fact = {"wait_start": wait["start"], "wait_end": wait["end"], "wait_minutes": wait["minutes"],
                "berth_start": berth["start"], "berth_radius_nm": berth_radius_nm}
        forms["anchorage_wait"] = (fact, [
            {"name": "wait_minutes", "value": wait["minutes"], "kind": "minutes", "required": True},
            {"name": "wait_start", "value": wait["start"], "kind": "time", "required": False},
            {"name": "wait_end", "value": wait["end"], "kind": "time", "required": False},
            {"name": "berth_start", "value": berth["start"], "kind": "time", "required": False},
            {"name": "berth_radius_nm", "value": berth_radius_nm, "kind": "distance_nm", "required": False, "role": "threshold"},
        ])
    anchorage = sum(s["minutes"] for s in stays if s["kind"] == "anchorage")
    berth_total = sum(s["minutes"] for s in stays if s["kind"] == "berth")
    if abs(berth_total - anchorage) >= 1.0:  # "which was longer" needs a difference a minute can show
        longer = "berth stay" if berth_total > anchorage else "anchorage wait"
        forms["anchorage_vs_berth"] = ({"anchorage_minutes": anchorage, "berth_minutes": berth_total, "stays": stays}, [
            {"name": "anchorage_minutes", "value": anchorage, "kind": "minutes", "required": True},
            {"name": "berth_minutes", "value": berth_total, "kind": "minutes", "required": True},
            {"name": "difference_minutes", "value": abs(berth_total - anchorage), "kind": "minutes", "required": True},
            {"name": "longer", "value": longer, "kind": "label", "required": True},
        ] + [{"name": f"stay_{i}_{k}", "value": s[k], "kind": "time", "required": False}
             for i, s in enumerate(stays, 1) for k in ("start", "end")]
          + [{"name": f"stay_{i}_minutes", "value": s["minutes"], "kind": "minutes", "required": False}
             for i, s in enumerate(stays, 1)])
    return forms


def _stays_by_call(stays: pd.DataFrame) -> dict[tuple[int, pd.Timestamp], list[dict[str, Any]]]:
    out: dict[tuple[int, pd.Timestamp], list[dict[str, Any]]] = {}
    if stays.empty:
        return out
    for s in stays.sort_values(["mmsi", "start"]).to_dict("records"):
        out.setdefault((int(s["mmsi"]), pd.Timestamp(s["call_arrival"])), []).append(s)
    return out


@dataclass(frozen=True)
class _Ask:
    """One form asked of one call: its context, the fact it answers and where that comes from."""

    context: ContextSpec
    n_rows: int
    grounding: list[dict[str, Any]]
    fact: dict[str, Any]
    fact_sql: str
    fact_sql_digest: str
    fact_params: dict[str, Any]
    source_hash: str


@register_builder("port_activity")
def port_call_candidates(inputs: CatalogueInputs) -> list[Seed]:
    calls = inputs.fact("port_calls")
    ports, tracks, cfg = inputs.ports, inputs.tracks, inputs.cfg
    digest, params = inputs.fact_digests.get("port_calls", ""), inputs.fact_params.get("port_calls", {})
    stays_digest, stays_params = inputs.fact_digests.get("port_stays", ""), inputs.fact_params.get("port_stays", {})
    stays_by_call = _stays_by_call(inputs.fact("port_stays"))
    rule = port_call_rule(params)
    call_rule = " ".join(r for r in (rule, stay_rule(stays_params)) if r) or None
    seeds = []
    margin = pd.Timedelta(minutes=30)
    for c in calls.itertuples(index=False):
        arrival, departure = pd.Timestamp(c.arrival), pd.Timestamp(c.departure)
        port = ports[ports["locode"] == c.locode].iloc[0]
        port_at = (float(port["lat"]), float(port["lon"]))
        vtype = vessel_type_name(c.vessel_type)
        fact = {
            "locode": c.locode, "port_name": c.port_name, "arrival": iso(arrival), "departure": iso(departure),
            "dwell_minutes": float(c.dwell_minutes),
        }
        port_values = [
            {"name": "mmsi", "value": int(c.mmsi), "kind": "id", "required": False},
            {"name": "locode", "value": c.locode, "kind": "entity", "required": True},
        ] + [  # nearby ports the context lists: naming one of them instead is a grounding error
            {"name": "other_port", "value": name, "kind": "distractor", "required": False}
            for name in nearby_ports(ports, *port_at, radius_nm=PORT_CONTEXT_NM)["port_name"] if name != c.port_name
        ]
        asks: dict[str, _Ask] = {}
        for form, at, cut in (("arrival", arrival, c.arrival_before_data), ("departure", departure, c.departure_after_data)):
            if cut:
                continue
            start, end = at - margin, at + margin
            spec = ContextSpec("track", int(c.mmsi), iso(start), iso(end), True, port_at,
                               (("ports_radius_nm", PORT_CONTEXT_NM), ("rule", rule)))
            asks[form] = _Ask(spec, tracks.count(c.mmsi, start, end, inclusive_end=True),
                              [{"name": form, "value": iso(at), "kind": "time", "required": True}],
                              fact, "sql/port_calls.sql", digest, params, c.source_hash)
        whole = None
        if not c.arrival_before_data and not c.departure_after_data:
            call_stays = stays_by_call.get((int(c.mmsi), arrival), [])
            whole = _call_context(inputs, c, call_stays, port_at, call_rule)
        if whole is not None:
            spec, n_rows = whole
            asks["dwell"] = _Ask(spec, n_rows, [
                {"name": "dwell_minutes", "value": float(c.dwell_minutes), "kind": "minutes", "required": True},
                {"name": "dwell_hours", "value": float(c.dwell_minutes) / 60, "kind": "hours", "required": False},
                {"name": "arrival", "value": iso(arrival), "kind": "time", "required": False},
                {"name": "departure", "value": iso(departure), "kind": "time", "required": False},
            ], fact, "sql/port_calls.sql", digest, params, c.source_hash)
            # a whole call that fits one context unthinned is asked on that context, so its three
            # forms can follow one another in a dialogue about the same records
            if spec.kind == "track":
                asks |= {form: replace(ask, context=spec, n_rows=n_rows) for form, ask in asks.items()}
            # the stay forms share the call's context (thinned or not): dialogues chain them with the dwell
            stays_hash = combined_hash(s["source_hash"] for s in call_stays)
            stay_forms = _stay_forms(call_stays, float(stays_params["berth_radius_nm"])) if stays_params else {}
            for form, (stay_fact, values) in stay_forms.items():
                asks[form] = _Ask(spec, n_rows, values, fact | stay_fact, "sql/port_stays.sql", stays_digest,
                                  stays_params, stays_hash)
        for form, ask in asks.items():
            if ask.n_rows < 2 or ask.n_rows > cfg.max_context_records:
                continue
            asked = FORMS[form]
            seeds.append(Seed(
                seed_id=seed_id(form, c.mmsi, c.arrival, c.source_hash),
                category=asked.category, difficulty=asked.difficulty, form=form, answerable=True,
                mmsi=int(c.mmsi), asked_mmsi=int(c.mmsi), vessel_name=text_or_none(c.vessel_name), vessel_type=vtype,
                window_start=ask.context.start, window_end=ask.context.end,
                fact_sql=ask.fact_sql, fact_sql_digest=ask.fact_sql_digest, fact_params=ask.fact_params,
                fact=ask.fact, source_hash=ask.source_hash, context=ask.context,
                n_context_records=ask.n_rows, grounding=port_values + ask.grounding, region=region_of(*port_at),
            ))
    return seeds


# --- vessels in port: an area question over every vessel's reports near one port -----------------

# per run (Tracks object): per (port, radius) the reports assigned to that port, in time order
_PORT_REPORTS: WeakKeyDictionary = WeakKeyDictionary()


def _port_reports(inputs: CatalogueInputs, locode: str, radius_nm: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Every report within radius_nm of the port and nearer to it than to any other port (ties: the
    smaller locode), as sql/port_calls.sql assigns reports to ports; in time order, found once."""
    cache = _PORT_REPORTS.setdefault(inputs.tracks, {})
    if (locode, radius_nm) not in cache:
        positions = inputs.tracks.positions
        port = inputs.ports[inputs.ports["locode"] == locode].iloc[0]
        lat, lon = positions["lat"].to_numpy(), positions["lon"].to_numpy()
        # a cheap box first (1 degree of latitude is 60 nm; longitude degrees shrink with latitude)
        dlat = radius_nm / 60.0 * 1.01
        dlon = min(dlat / max(np.cos(np.radians(min(abs(port["lat"]) + dlat, 89.9))), 1e-6), 360.0)
        box = (np.abs(lat - port["lat"]) <= dlat) & (np.abs((lon - port["lon"] + 180.0) % 360.0 - 180.0) <= dlon)
        rows = positions[box]
        rows = rows[distance_nm(port["lat"], port["lon"], rows["lat"].to_numpy(), rows["lon"].to_numpy()) <= radius_nm]
        # a port farther than 2 radii from this one cannot be nearer to a report within a radius of it
        rivals = nearby_ports(inputs.ports, float(port["lat"]), float(port["lon"]), 2 * radius_nm).sort_values("locode")
        if len(rivals) > 1 and len(rows):
            d = distance_nm(rows["lat"].to_numpy()[:, None], rows["lon"].to_numpy()[:, None],
                            rivals["lat"].to_numpy()[None, :], rivals["lon"].to_numpy()[None, :])
            rows = rows[rivals["locode"].to_numpy()[np.argmin(d, axis=1)] == locode]
        rows = rows.sort_values(["ts", "mmsi", "row_hash"])
        cache[(locode, radius_nm)] = (rows, rows["ts"].to_numpy())
    return cache[(locode, radius_nm)]


def _area_slice(inputs: CatalogueInputs, locode: str, start: Any, end: Any, radius_nm: float) -> pd.DataFrame:
    rows, ts = _port_reports(inputs, locode, radius_nm)
    lo = np.searchsorted(ts, np.datetime64(pd.Timestamp(start)), side="left")
    hi = np.searchsorted(ts, np.datetime64(pd.Timestamp(end)), side="left")
    return rows.iloc[lo:hi]


def port_area_rows(inputs: CatalogueInputs, locode: str, start: Any, end: Any, radius_nm: float) -> pd.DataFrame:
    """The reports assigned to the port (see _port_reports) in [start, end), by vessel, then time."""
    return _area_slice(inputs, locode, start, end, radius_nm).sort_values(["mmsi", "ts", "row_hash"])


def stopped_mask(rows: pd.DataFrame, stopped_max_sog_kn: float) -> np.ndarray:
    """sql/port_calls.sql's stopped: SOG at or below the limit; SOG NA: status at anchor or moored."""
    sog = rows["sog_kn"].to_numpy(dtype=float)
    status = rows["nav_status"].to_numpy(dtype=float)
    return np.where(np.isnan(sog), np.isin(status, [1, 5]), sog <= stopped_max_sog_kn)


def in_port_rule(params: dict[str, Any]) -> str:
    return (f"A vessel was in port in this window when at least one of its reports here is stopped: SOG at or below "
            f"{params['stopped_max_sog_kn']:g} kn, or SOG NA and status at anchor or moored.")


@register_renderer("port_area")
def render_port_area(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    locode, radius = spec.get("locode"), float(spec.get("radius_nm"))
    rows = port_area_rows(inputs, locode, spec.start, spec.end, radius)
    port = inputs.ports[inputs.ports["locode"] == locode].iloc[0]
    lines = [
        f"AIS position reports within {radius:g} nm of {port['port_name']} ({locode}, {port['lat']:.4f}, "
        f"{port['lon']:.4f}) and nearer to it than to any other port, {pd.Timestamp(spec.start):%Y-%m-%d} "
        f"{pd.Timestamp(spec.start):%H:%M}-{pd.Timestamp(spec.end):%H:%M} UTC:"
    ]
    lines += report_lines(rows, fmt, with_mmsi=True)
    lines.append(spec.get("rule"))
    return "\n".join(lines)


@register_builder("port_activity")
def vessels_in_port_candidates(inputs: CatalogueInputs) -> list[Seed]:
    """Which vessels were in port in a short window on the hour: the vessels whose port call there
    overlaps the window. Asked only where the window's reports show exactly those vessels stopped."""
    calls, ports, cfg = inputs.fact("port_calls"), inputs.ports, inputs.cfg
    params = inputs.fact_params.get("port_calls", {})
    if calls.empty or not params:
        return []
    digest, radius, stop_kn = inputs.fact_digests.get("port_calls", ""), float(params["port_radius_nm"]), float(params["stopped_max_sog_kn"])
    rule = in_port_rule(params)
    seeds = []
    for locode, at_port in calls.groupby("locode", sort=True):
        port = ports[ports["locode"] == locode].iloc[0]
        port_at = (float(port["lat"]), float(port["lon"]))
        others = [{"name": "other_port", "value": name, "kind": "distractor", "required": False}
                  for name in nearby_ports(ports, *port_at, radius_nm=PORT_CONTEXT_NM)["port_name"] if name != port["port_name"]]
        arrivals, departures = pd.to_datetime(at_port["arrival"]), pd.to_datetime(at_port["departure"])
        for hour in pd.date_range(arrivals.min().floor("h"), departures.max(), freq="h"):
            for minutes in IN_PORT_WINDOWS:
                start, end = hour, hour + pd.Timedelta(minutes=minutes)
                calls_in = at_port[(arrivals < end).to_numpy() & (departures >= start).to_numpy()]
                if calls_in.empty:
                    break
                rows = _area_slice(inputs, locode, start, end, radius)
                if len(rows) > cfg.max_context_records:
                    continue
                expected = sorted({int(m) for m in calls_in["mmsi"]})
                shown = sorted({int(m) for m in rows["mmsi"].to_numpy()[stopped_mask(rows, stop_kn)]})
                if len(rows) < 2 or shown != expected:
                    break  # a stop too short to be a call, or a call's vessel moving all window: not derivable
                fact = {"locode": locode, "port_name": str(port["port_name"]), "start": iso(start), "end": iso(end),
                        "n_vessels": len(expected), "mmsis": expected, "stopped_max_sog_kn": stop_kn}
                grounding = [
                    {"name": "locode", "value": locode, "kind": "entity", "required": True},
                    {"name": "n_vessels", "value": len(expected), "kind": "count", "required": True},
                    {"name": "window_start", "value": iso(start), "kind": "time", "required": False},
                    {"name": "window_end", "value": iso(end), "kind": "time", "required": False},
                    {"name": "stopped_max_sog_kn", "value": stop_kn, "kind": "speed_kn", "required": False, "role": "threshold"},
                ] + [{"name": f"mmsi_{i}", "value": m, "kind": "id", "required": True} for i, m in enumerate(expected, 1)]
                source_hash = combined_hash(calls_in["source_hash"])
                spec = FORMS["vessels_in_port"]
                seeds.append(Seed(
                    seed_id=seed_id("vessels_in_port", locode, iso(start), minutes, source_hash),
                    category=spec.category, difficulty=spec.difficulty, form=spec.name, answerable=True,
                    mmsi=0, asked_mmsi=0, vessel_name=None, vessel_type="all types",
                    window_start=iso(start), window_end=iso(end),
                    fact_sql="sql/port_calls.sql", fact_sql_digest=digest, fact_params=params,
                    fact=fact, source_hash=source_hash,
                    context=ContextSpec("port_area", None, iso(start), iso(end), False, port_at,
                                        (("locode", locode), ("radius_nm", radius), ("rule", rule))),
                    n_context_records=len(rows), grounding=grounding + others, region=region_of(*port_at),
                ))
                break
    return seeds
