"""Traffic patterns (DESIGN.md category 4): distinct vessels per grid cell, hour and vessel type
(sql/traffic_density.sql), and the busiest ports of a day (sql/busiest_ports.sql).

An area question's context is every record its count is taken over: a cell-hour's reports, or a
cell's vessels hour by hour, or the port calls of a day at the ports of one sea area. A fact is
asked only where the staged reports in the context give exactly the fact's counts (reports that
staging flagged also count in the fact, and a vessel that broadcast two type groups in one hour
cannot be shown with one type): the answer must be derivable from what the context shows.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from tasks.catalogue.base import (
    CatalogueInputs, ContextSpec, FORMS, Form, Seed, hhmm, iso, region_of, register_builder, register_form,
    register_renderer, report_lines, seed_id, vessel_type_name,
)

SPAN_HOURS = 3  # hours one busiest-hour / hour-change context compares
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)



def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _rows_hash(rows: Any) -> str:
    """md5 of the fact rows a seed is computed from (these facts carry no source-row hash): rows is
    a 2-d array (or DataFrame) of the fact's columns, in the fact's order."""
    values = rows.to_numpy() if isinstance(rows, pd.DataFrame) else rows
    text = "\n".join("|".join(str(v) for v in row) for row in values)
    return hashlib.md5(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# cell-hour forms: one grid cell, one hour, every report received from it

def _type_mix(by_type: dict[str, int]) -> str:
    ranked = sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name}: {_plural(n, 'vessel')}" for name, n in ranked)


def _dominant(by_type: dict[str, int], n_vessels: int) -> str:
    ranked = sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) == 1:
        return f"all {_plural(n_vessels, 'vessel')} were in the {ranked[0][0]} group"
    top = [name for name, n in ranked if n == ranked[0][1]]
    if len(top) == 1:
        return f"the {top[0]} group was the largest ({ranked[0][1]} of {n_vessels})"
    return f"no single type dominated: {' and '.join(top)} tie at {_plural(ranked[0][1], 'vessel')} each"


def _cell_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    values = {
        "hour_start": hhmm(f["hour_start"]), "hour_end": hhmm(f["hour_end"]),
        "n_vessels": str(f["n_vessels"]), "vessels_word": "vessel" if f["n_vessels"] == 1 else "vessels",
        "n_reports": str(f["n_reports"]), "n_types": str(len(f["by_type"])),
        "mmsi_list": ", ".join(str(m) for m in f["mmsis"]),
        "type_mix": _type_mix(f["by_type"]), "dominant": _dominant(f["by_type"], f["n_vessels"]),
    }
    return values


register_form(Form(
    "cell_vessel_count", "traffic", "easy",
    questions=(
        "How many distinct vessels reported from this grid cell between {start} and {end} UTC on {day}?",
        "Count the vessels seen in this cell from {start} to {end} UTC.",
        "How many different ships sent position reports from the cell in the hour {start}-{end} UTC?",
        "From these reports, how many vessels were in the cell between {start} and {end} UTC?",
    ),
    answers=(
        "{n_vessels} {vessels_word} reported from the cell between {hour_start} and {hour_end} UTC, sending {n_reports} position reports in all.",
        "Between {hour_start} and {hour_end} UTC the cell saw {n_vessels} distinct {vessels_word} ({n_reports} reports).",
    ),
    reasoning=(
        "Counting each MMSI once among the {n_reports} reports:",
        "The {n_reports} reports come from these MMSIs: {mmsi_list}.",
    ),
    values=_cell_values, plant=("hour_start", "time"),
))
register_form(Form(
    "cell_vessel_list", "traffic", "easy",
    questions=(
        "Which vessels reported from this grid cell between {start} and {end} UTC on {day}?",
        "List the MMSIs seen in this cell from {start} to {end} UTC.",
        "Which ships were in the cell in the hour {start}-{end} UTC, by MMSI?",
    ),
    answers=(
        "Between {hour_start} and {hour_end} UTC the cell had reports from {n_vessels} {vessels_word}: {mmsi_list}.",
        "The vessels in the cell from {hour_start} to {hour_end} UTC were {mmsi_list} ({n_vessels} in all).",
    ),
    reasoning=(
        "Taking each distinct MMSI in the mmsi column of the {n_reports} reports:",
        "Reading the MMSIs off the reports and keeping each once:",
    ),
    values=_cell_values, plant=("hour_start", "time"),
))
register_form(Form(
    "cell_type_mix", "traffic", "medium",
    questions=(
        "Which types of vessel were in this grid cell between {start} and {end} UTC on {day}, and how many of each?",
        "Break the vessels in the cell from {start} to {end} UTC down by ship type.",
        "Which vessel type dominated the traffic in this cell between {start} and {end} UTC?",
        "How many vessels of each type reported from the cell in the hour {start}-{end} UTC?",
    ),
    answers=(
        "Between {hour_start} and {hour_end} UTC the cell held {type_mix}; {dominant}.",
        "By type, the {n_vessels} {vessels_word} in the cell from {hour_start} to {hour_end} UTC were {type_mix}, so {dominant}.",
    ),
    reasoning=(
        "Each vessel counts once, under the type listed for its MMSI; {n_vessels} {vessels_word} fall into {n_types} type groups.",
        "Grouping the distinct MMSIs by their listed ship type:",
    ),
    values=_cell_values, plant=("hour_start", "time"),
))


# ---------------------------------------------------------------------------------------------
# cell-span forms: one grid cell over SPAN_HOURS hours, each vessel's first report per hour

def _span_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    hours = f["hours"]
    first, last = hours[0], hours[-1]
    delta = last["vessels"] - first["vessels"]
    change = "no change" if delta == 0 else f"{abs(delta)} {'more' if delta > 0 else 'fewer'}"
    values = {
        "hour_counts": "; ".join(
            f"{hhmm(h['start'])}-{hhmm(pd.Timestamp(h['start']) + HOUR)}: {_plural(h['vessels'], 'vessel')}" for h in hours
        ),
        "n_hours": str(len(hours)),
        "first_hour": hhmm(first["start"]), "first_hour_end": hhmm(pd.Timestamp(first["start"]) + HOUR),
        "first_vessels": _plural(first["vessels"], "vessel"),
        "last_hour": hhmm(last["start"]), "last_hour_end": hhmm(pd.Timestamp(last["start"]) + HOUR),
        "last_vessels": _plural(last["vessels"], "vessel"), "change": change,
    }
    if f.get("busiest_hour"):
        values |= {
            "busiest_hour": hhmm(f["busiest_hour"]), "busiest_hour_end": hhmm(pd.Timestamp(f["busiest_hour"]) + HOUR),
            "busiest_vessels": _plural(f["busiest_vessels"], "vessel"),
        }
    return values


register_form(Form(
    "cell_busiest_hour", "traffic", "hard",
    questions=(
        "In which hour between {start} and {end} UTC on {day} did the most vessels report from this grid cell?",
        "Which hour of {start}-{end} UTC was the busiest in this cell, counting distinct vessels?",
        "Compare the hours from {start} to {end} UTC: when was traffic in the cell highest?",
        "During {start}-{end} UTC, which hour saw the most different ships in this cell?",
    ),
    answers=(
        "The busiest hour was {busiest_hour}-{busiest_hour_end} UTC with {busiest_vessels}; hour by hour the cell had {hour_counts}.",
        "Traffic peaked between {busiest_hour} and {busiest_hour_end} UTC ({busiest_vessels}). The counts per hour were {hour_counts}.",
    ),
    reasoning=(
        "Counting the distinct MMSIs listed in each hour:",
        "Each vessel appears at most once per hour, so the lines per hour are the vessels per hour.",
    ),
    values=_span_values, plant=("busiest_hour", "time"),
))
register_form(Form(
    "cell_hour_change", "traffic", "hard",
    questions=(
        "How did the number of vessels in this grid cell change from the first to the last hour of {start}-{end} UTC on {day}?",
        "Compare the first and the last hour between {start} and {end} UTC: did traffic in the cell grow or shrink?",
        "Between {start} and {end} UTC, was the cell busier in its first hour or its last hour, and by how many vessels?",
    ),
    answers=(
        "From {first_vessels} in {first_hour}-{first_hour_end} UTC to {last_vessels} in {last_hour}-{last_hour_end} UTC: {change}.",
        "The cell had {first_vessels} in the first hour ({first_hour}-{first_hour_end} UTC) and {last_vessels} in the last ({last_hour}-{last_hour_end} UTC), {change}.",
    ),
    reasoning=(
        "Counting the distinct MMSIs hour by hour ({hour_counts}):",
        "Per hour the cell had {hour_counts}.",
    ),
    values=_span_values, plant=("last_hour", "time"),
))


def _cell_keys(positions: pd.DataFrame, cell_deg: float) -> pd.DataFrame:
    """hour, cell_lat_idx, cell_lon_idx and mmsi of each staged report (the query's floor(lat / size))."""
    return pd.DataFrame({
        "hour": positions["ts"].dt.floor("h"),
        "cell_lat_idx": np.floor(positions["lat"].to_numpy() / cell_deg).astype("int64"),
        "cell_lon_idx": np.floor(positions["lon"].to_numpy() / cell_deg).astype("int64"),
        "mmsi": positions["mmsi"].astype("int64").to_numpy(),
    }, index=positions.index)


CELL = ["hour", "cell_lat_idx", "cell_lon_idx"]
FACT_COLUMNS = ["hour", "cell_lat_idx", "cell_lon_idx", "vessel_type_code", "vessels", "n_reports"]


def _consistent_cell_hours(inputs: CatalogueInputs, density: pd.DataFrame, cell_deg: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell-hour of the fact: vessels and reports, with `consistent` true where the staged reports
    (each vessel under its listed type) give the same counts per type group; and the distinct
    (cell-hour, MMSI, type group) pairs of the staged reports."""
    types = {m: vessel_type_name(p.get("vessel_type")) for m, p in inputs.particulars().items()}
    totals = density.groupby(CELL).agg(vessels=("vessels", "sum"), n_reports=("n_reports", "sum"))
    fact_mix = density.groupby(CELL + ["type_name"])["vessels"].sum()

    seen = _cell_keys(inputs.tracks.positions, cell_deg)
    reports = seen.groupby(CELL).size().rename("seen_reports")
    pairs = seen.drop_duplicates(CELL + ["mmsi"])
    pairs = pairs.assign(type_name=pairs["mmsi"].map(types).fillna("unknown type"))
    seen_vessels = pairs.groupby(CELL).size().rename("seen_vessels")
    seen_mix = pairs.groupby(CELL + ["type_name"]).size()
    both = fact_mix.to_frame("fact").join(seen_mix.rename("seen"), how="outer")
    mix_ok = (both["fact"] == both["seen"]).groupby(level=CELL).all().rename("mix_ok")

    out = totals.join([reports, seen_vessels, mix_ok], how="left")
    out["consistent"] = (
        (out["n_reports"] == out["seen_reports"]) & (out["vessels"] == out["seen_vessels"])
        & out["mix_ok"].fillna(False).astype(bool)
    )
    return out.reset_index(), pairs


def _cell_grounding(fact: dict[str, Any], form: str) -> list[dict[str, Any]]:
    g = [
        {"name": "window_start", "value": fact["hour_start"], "kind": "time", "required": False},
        {"name": "window_end", "value": fact["hour_end"], "kind": "time", "required": False},
        {"name": "n_vessels", "value": fact["n_vessels"], "kind": "count", "required": form != "cell_type_mix"},
        {"name": "n_reports", "value": fact["n_reports"], "kind": "count", "required": False},
        {"name": "n_types", "value": len(fact["by_type"]), "kind": "count", "required": False},
    ]
    for name, n in fact["by_type"].items():
        g.append({"name": f"type_{name}", "value": name, "kind": "label", "required": form == "cell_type_mix"})
        g.append({"name": f"vessels_{name}", "value": int(n), "kind": "count", "required": form == "cell_type_mix"})
    for m in fact["mmsis"]:
        g.append({"name": "mmsi", "value": int(m), "kind": "id", "required": form == "cell_vessel_list"})
    return g


def _cell_seed(form: str, fact: dict[str, Any], spec: ContextSpec, n_records: int, grounding: list[dict[str, Any]],
               source_hash: str, digest: str, params: dict[str, Any], region: str) -> Seed:
    meta = FORMS[form]
    return Seed(
        seed_id=seed_id(form, fact["cell_lat_idx"], fact["cell_lon_idx"], spec.start, spec.end, source_hash),
        category=meta.category, difficulty=meta.difficulty, form=form, answerable=True, mmsi=0, asked_mmsi=0,
        vessel_name=None, vessel_type="all types", window_start=spec.start, window_end=spec.end,
        fact_sql="sql/traffic_density.sql", fact_sql_digest=digest, fact_params=params, fact=fact,
        source_hash=source_hash, context=spec, n_context_records=n_records, grounding=grounding, region=region,
    )


@register_builder("traffic")
def traffic_cell_candidates(inputs: CatalogueInputs) -> list[Seed]:
    density = inputs.fact("traffic_density")
    params = inputs.fact_params.get("traffic_density", {})
    if density.empty or "cell_deg" not in params or inputs.tracks.positions.empty:
        return []
    cell_deg, max_records = float(params["cell_deg"]), inputs.cfg.max_context_records
    digest = inputs.fact_digests.get("traffic_density", "")
    density = density.assign(
        hour=pd.to_datetime(density["hour"]), type_name=[vessel_type_name(c) for c in density["vessel_type_code"]])
    cells, pairs = _consistent_cell_hours(inputs, density, cell_deg)
    fact_rows = density.groupby(CELL).indices
    fact_values = density[FACT_COLUMNS].to_numpy()
    type_names, vessel_counts = density["type_name"].to_numpy(), density["vessels"].to_numpy()
    seen_pairs = pairs.groupby(CELL).indices
    seeds: list[Seed] = []

    # one cell, one hour: every report in the context
    for c in cells[cells["consistent"] & (cells["vessels"] >= 2) & (cells["n_reports"] <= max_records)].itertuples(index=False):
        key = (c.hour, int(c.cell_lat_idx), int(c.cell_lon_idx))
        by_type: dict[str, int] = {}
        for name, n in zip(type_names[fact_rows[key]], vessel_counts[fact_rows[key]]):
            by_type[name] = by_type.get(name, 0) + int(n)
        fact = {
            "hour_start": iso(c.hour), "hour_end": iso(c.hour + HOUR), "cell_deg": cell_deg,
            "cell_lat_idx": key[1], "cell_lon_idx": key[2], "n_vessels": int(c.vessels), "n_reports": int(c.n_reports),
            "by_type": {str(k): int(v) for k, v in sorted(by_type.items())},
            "mmsis": sorted(int(m) for m in pairs["mmsi"].iloc[seen_pairs[key]]),
        }
        spec = ContextSpec("cell_hour", None, iso(c.hour), iso(c.hour + HOUR),
                           extra=(("cell", (key[1], key[2])), ("cell_deg", cell_deg)))
        region = region_of((key[1] + 0.5) * cell_deg, (key[2] + 0.5) * cell_deg)
        source_hash = _rows_hash(fact_values[fact_rows[key]])
        for form in ("cell_vessel_count", "cell_vessel_list", "cell_type_mix"):
            seeds.append(_cell_seed(form, fact, spec, int(c.n_reports), _cell_grounding(fact, form), source_hash, digest,
                                    params, region))

    # one cell over SPAN_HOURS hours inside the data: each vessel's first report per hour
    first_hour, last_hour = inputs.tracks.positions["ts"].min().floor("h"), inputs.tracks.positions["ts"].max().floor("h")
    busy = cells.loc[cells["consistent"] & (cells["vessels"] >= 2), ["cell_lat_idx", "cell_lon_idx"]].drop_duplicates()
    spans = cells.merge(busy, on=["cell_lat_idx", "cell_lon_idx"])  # only cells that ever held 2 vessels at once
    for (lat_idx, lon_idx), at in spans.groupby(["cell_lat_idx", "cell_lon_idx"]).indices.items():
        by_hour = {pd.Timestamp(h): (int(v), bool(ok)) for h, v, ok in zip(
            spans["hour"].to_numpy()[at], spans["vessels"].to_numpy()[at], spans["consistent"].to_numpy()[at])}
        next_free = first_hour
        for start in sorted(by_hour):
            if start < next_free or start + (SPAN_HOURS - 1) * HOUR > last_hour:
                continue
            hours = [start + k * HOUR for k in range(SPAN_HOURS)]
            present = [by_hour[h] for h in hours if h in by_hour]
            counts = [by_hour[h][0] if h in by_hour else 0 for h in hours]
            n_records = sum(counts)
            if (not all(ok for _, ok in present) or len(present) < 2 or max(counts) < 2
                    or n_records > max_records):
                continue
            next_free = start + SPAN_HOURS * HOUR
            end = start + SPAN_HOURS * HOUR
            rows = np.concatenate([fact_rows[(h, lat_idx, lon_idx)] for h in hours if h in by_hour])
            fact = {
                "window_start": iso(start), "window_end": iso(end), "cell_deg": cell_deg,
                "cell_lat_idx": int(lat_idx), "cell_lon_idx": int(lon_idx),
                "hours": [{"start": iso(h), "vessels": n} for h, n in zip(hours, counts)],
                "first_hour": iso(hours[0]), "last_hour": iso(hours[-1]),
            }
            busiest = counts.index(max(counts)) if counts.count(max(counts)) == 1 else None
            if busiest is not None:
                fact |= {"busiest_hour": iso(hours[busiest]), "busiest_vessels": counts[busiest]}
            delta = counts[-1] - counts[0]
            grounding = (
                [{"name": f"hour_{k}", "value": iso(h), "kind": "time", "required": False} for k, h in enumerate(hours + [end])]
                # both forms show every hour's count (the answer or its worked reasoning lists them)
                + [{"name": f"vessels_hour_{k}", "value": n, "kind": "count", "required": True} for k, n in enumerate(counts)]
                + [{"name": "n_hours", "value": SPAN_HOURS, "kind": "count", "required": False}]
            )
            spec = ContextSpec("cell_hours", None, iso(start), iso(end),
                               extra=(("cell", (int(lat_idx), int(lon_idx))), ("cell_deg", cell_deg)))
            region = region_of((lat_idx + 0.5) * cell_deg, (lon_idx + 0.5) * cell_deg)
            source_hash = _rows_hash(fact_values[np.sort(rows)])
            per_form = {
                "cell_hour_change": [
                    {"name": "first_vessels", "value": counts[0], "kind": "count", "required": True},
                    {"name": "last_vessels", "value": counts[-1], "kind": "count", "required": True},
                    {"name": "change", "value": abs(delta), "kind": "count", "required": delta != 0},
                ],
            }
            if busiest is not None:
                per_form["cell_busiest_hour"] = [
                    {"name": "busiest_hour", "value": iso(hours[busiest]), "kind": "time", "required": True},
                    {"name": "busiest_vessels", "value": counts[busiest], "kind": "count", "required": True},
                ]
            for form, values in sorted(per_form.items()):
                seeds.append(_cell_seed(form, fact, spec, n_records, grounding + values, source_hash, digest, params, region))
    return seeds


def _cell_header(spec: ContextSpec, what: str) -> str:
    lat_idx, lon_idx = spec.get("cell")
    deg = float(spec.get("cell_deg"))
    decimals = len(f"{deg:g}".partition(".")[2])  # bounds written as precisely as the cell size
    bound = lambda idx: f"{idx * deg:.{decimals}f}"  # noqa: E731
    start, end = pd.Timestamp(spec.start), pd.Timestamp(spec.end)
    return (f"{what} from grid cell lat {bound(lat_idx)} to {bound(lat_idx + 1)}, lon {bound(lon_idx)} to "
            f"{bound(lon_idx + 1)} ({deg:g}-degree cells), {start:%Y-%m-%d} {start:%H:%M}-{end:%H:%M} UTC:")


def _cell_rows(spec: ContextSpec, inputs: CatalogueInputs) -> pd.DataFrame:
    positions = inputs.tracks.positions
    ts = positions["ts"].to_numpy()
    in_time = positions.iloc[np.flatnonzero((ts >= np.datetime64(pd.Timestamp(spec.start)))
                                            & (ts < np.datetime64(pd.Timestamp(spec.end))))]
    keys = _cell_keys(in_time, float(spec.get("cell_deg")))
    lat_idx, lon_idx = spec.get("cell")
    rows = in_time[(keys["cell_lat_idx"] == lat_idx) & (keys["cell_lon_idx"] == lon_idx)]
    return rows.sort_values(["ts", "mmsi", "row_hash"])


def vessel_types(inputs: CatalogueInputs, mmsis: list[int]) -> dict[int, str]:
    """Each vessel's type group from the vessel_particulars fact ("unknown type" when it sent none)."""
    table = inputs.fact("vessel_particulars")
    codes = {}
    if not table.empty:
        hit = table[table["mmsi"].isin(mmsis)]
        codes = dict(zip(hit["mmsi"].astype("int64"), hit["vessel_type"]))
    return {m: vessel_type_name(codes.get(m)) for m in mmsis}


def _type_line(rows: pd.DataFrame, inputs: CatalogueInputs) -> str:
    types = vessel_types(inputs, sorted({int(m) for m in rows["mmsi"]}))
    return "Vessel types (MMSI type): " + "; ".join(f"{m} {t}" for m, t in types.items())


@register_renderer("cell_hour")
def render_cell_hour(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    rows = _cell_rows(spec, inputs)
    lines = [_cell_header(spec, "All AIS position reports received"), _type_line(rows, inputs)]
    lines += report_lines(rows, fmt, with_mmsi=True)
    lines.append("Traffic counts each vessel (MMSI) once per cell and hour, under the type listed for it.")
    return "\n".join(lines)


@register_renderer("cell_hours")
def render_cell_hours(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    rows = _cell_rows(spec, inputs)
    rows = rows.assign(_hour=rows["ts"].dt.floor("h")).drop_duplicates(["_hour", "mmsi"]).drop(columns="_hour")
    lines = [_cell_header(spec, "Each vessel's first AIS position report per hour"), _type_line(rows, inputs)]
    lines += report_lines(rows, fmt, with_mmsi=True)
    lines.append("Each vessel (MMSI) is listed once per hour in which it reported from the cell; "
                 "an hour with no line had no vessel in the cell.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# busiest ports: the port calls of one day at the ports of one sea area

def _port_values(seed: Seed) -> dict[str, str]:
    f = seed.fact
    values = {
        "port_name": f["port_name"], "locode": f["locode"], "vessels": _plural(f["vessels"], "vessel"),
        "calls": _plural(f["calls"], "call"), "vessel_minutes": f"{f['vessel_minutes']:.0f}",
        "vessel_hours": f"{f['vessel_minutes'] / 60:.1f}", "n_ports": str(f["n_ports"]), "n_calls": str(f["n_calls"]),
        "runner_minutes": f"{f['runner_minutes']:.0f}",
    }
    if f["runner_name"]:
        values["runner"] = f"Next came {f['runner_name']} ({f['runner_locode']}) with {_plural(f['runner_vessels'], 'vessel')}"
    else:  # several ports share second place: none is named
        values["runner"] = f"No other port had more than {_plural(f['runner_vessels'], 'vessel')}"
    return values


register_form(Form(
    "busiest_port", "traffic", "medium",
    questions=(
        "Which of these ports was the busiest on {day}, counting the distinct vessels that called there?",
        "On {day}, which port in these records had calls from the most vessels?",
        "Rank the ports by the number of different vessels calling on {day}: which comes first?",
        "Which port saw the most vessels on {day}?",
    ),
    answers=(
        "{port_name} ({locode}) was the busiest on {day}: {vessels} made {calls} there, {vessel_hours} hours in port within the day. {runner}.",
        "The busiest port was {port_name} ({locode}) with {vessels} ({calls}, {vessel_hours} hours in port that day). {runner}.",
    ),
    reasoning=(
        "Counting the distinct MMSIs per port among the {n_calls} calls that overlap {day}:",
        "Grouping the {n_calls} calls by port and counting each vessel once per port:",
    ),
    values=_port_values, plant=("vessel_hours", "number"),
))
register_form(Form(
    "port_time_in_port", "traffic", "hard",
    questions=(
        "Which of these ports had the most vessel time in port on {day}, and how much?",
        "On {day}, at which port did vessels spend the most time in port in total?",
        "Summing the time each call spent in port within {day}, which port comes out on top?",
        "Which port accumulated the most vessel-hours on {day}, counting only the part of each call inside the day?",
    ),
    answers=(
        "{port_name} ({locode}) had the most: {vessel_minutes} minutes ({vessel_hours} hours) of vessel time in port on {day}, from {calls}. The next port had {runner_minutes} minutes.",
        "Vessels spent {vessel_minutes} minutes in port at {port_name} ({locode}) on {day}, about {vessel_hours} hours over {calls}; no other port listed reached {runner_minutes} minutes.",
    ),
    reasoning=(
        "Each call's time is cut to the day, from 00:00 UTC to midnight, and the minutes are added up per port.",
        "Clipping each of the {n_calls} calls to {day} and summing its minutes in port by port:",
    ),
    values=_port_values, plant=("vessel_minutes", "minutes"),
))


def _day_calls(calls: pd.DataFrame, locodes: list[str], day: pd.Timestamp) -> pd.DataFrame:
    """The calls busiest_ports counts for the day: arrival's date <= day <= departure's date."""
    hit = calls[calls["locode"].isin(locodes) & (calls["arrival"] < day + DAY) & (calls["departure"] >= day)]
    return hit.sort_values(["arrival", "mmsi", "locode"])


def _clipped_minutes(calls: pd.DataFrame, day: pd.Timestamp) -> pd.Series:
    start = calls["arrival"].where(calls["arrival"] > day, day)
    end = calls["departure"].where(calls["departure"] < day + DAY, day + DAY)
    return (end - start).dt.total_seconds() / 60.0


@register_builder("traffic")
def busiest_port_candidates(inputs: CatalogueInputs) -> list[Seed]:
    busiest, calls = inputs.fact("busiest_ports"), inputs.fact("port_calls")
    if busiest.empty or calls.empty:
        return []
    digest, params = inputs.fact_digests.get("busiest_ports", ""), inputs.fact_params.get("busiest_ports", {})
    calls = calls.assign(arrival=pd.to_datetime(calls["arrival"]), departure=pd.to_datetime(calls["departure"]))
    at = inputs.ports.drop_duplicates("locode").set_index("locode")
    busiest = busiest.assign(
        day=pd.to_datetime(busiest["day"]),
        region=[region_of(at.at[c, "lat"], at.at[c, "lon"]) if c in at.index else "unknown" for c in busiest["locode"]],
    )
    seeds = []
    for (day, region), ports in busiest.groupby(["day", "region"]):
        if len(ports) < 2:
            continue
        day_calls = _day_calls(calls, list(ports["locode"]), day)
        if len(day_calls) < 2 or len(day_calls) > inputs.cfg.max_context_records:
            continue
        # the context must give the fact: same vessels, calls and clipped minutes per port
        seen = day_calls.assign(minutes=_clipped_minutes(day_calls, day)).groupby("locode").agg(
            vessels=("mmsi", "nunique"), calls=("mmsi", "size"), minutes=("minutes", "sum"))
        check = ports.set_index("locode").join(seen, rsuffix="_seen")
        if not ((check["vessels"] == check["vessels_seen"]).all() and (check["calls"] == check["calls_seen"]).all()
                and np.allclose(check["vessel_minutes"], check["minutes"], atol=0.01)):
            continue
        locodes = tuple(sorted(ports["locode"]))
        spec = ContextSpec("port_day", None, iso(day), iso(day + DAY), extra=(("locodes", locodes), ("region", region)))
        source_hash = _rows_hash(ports.drop(columns=["region"]).sort_values("locode"))
        for form, measure in (("busiest_port", "vessels"), ("port_time_in_port", "vessel_minutes")):
            ranked = ports.sort_values([measure, "locode"], ascending=[False, True])
            top, runner = ranked.iloc[0], ranked.iloc[1]
            if np.isclose(top[measure], runner[measure]):
                continue  # no single busiest port
            # the runner-up is named only in the vessels form, and only when no other port ties with it
            named = form == "busiest_port" and (len(ranked) < 3 or not np.isclose(ranked.iloc[2][measure], runner[measure]))
            fact = {
                "day": f"{day:%Y-%m-%d}", "region": region, "locode": top["locode"], "port_name": top["port_name"],
                "vessels": int(top["vessels"]), "calls": int(top["calls"]), "vessel_minutes": float(top["vessel_minutes"]),
                "runner_locode": runner["locode"] if named else None, "runner_name": runner["port_name"] if named else None,
                "runner_vessels": int(runner["vessels"]), "runner_minutes": float(runner["vessel_minutes"]),
                "n_ports": len(ports), "n_calls": len(day_calls),
            }
            grounding = [
                {"name": "window_start", "value": iso(day), "kind": "time", "required": False},
                {"name": "window_end", "value": iso(day + DAY), "kind": "time", "required": False},
                {"name": "day", "value": fact["day"], "kind": "date", "required": False},
                {"name": "locode", "value": fact["locode"], "kind": "entity", "required": True},
                {"name": "n_calls", "value": fact["n_calls"], "kind": "count", "required": False},
                {"name": "n_ports", "value": fact["n_ports"], "kind": "count", "required": False},
                # both forms' answers give the top port's calls and the runner-up's figure: part of the answer
                {"name": "calls", "value": fact["calls"], "kind": "count", "required": True},
                # vessel time in port adds up every call's minutes inside the day: more than a day at a busy port
                {"name": "vessel_hours", "value": fact["vessel_minutes"] / 60, "kind": "hours", "required": False,
                 "role": "total"},
                {"name": "vessel_minutes", "value": fact["vessel_minutes"], "kind": "minutes",
                 "required": form == "port_time_in_port", "role": "total"},
            ]
            if named:
                grounding += [
                    {"name": "runner_locode", "value": fact["runner_locode"], "kind": "entity", "required": False},
                    {"name": "runner_name", "value": fact["runner_name"], "kind": "name", "required": False},
                ]
            if form == "busiest_port":
                grounding += [
                    {"name": "vessels", "value": fact["vessels"], "kind": "count", "required": True},
                    {"name": "runner_vessels", "value": fact["runner_vessels"], "kind": "count", "required": True},
                ]
            else:
                grounding += [{"name": "runner_minutes", "value": fact["runner_minutes"], "kind": "minutes", "required": True,
                               "role": "total"}]
            grounding += [  # the other listed ports: naming one of them as the answer is a grounding error
                {"name": "other_port", "value": name, "kind": "distractor", "required": False}
                for name in sorted(set(ports["port_name"]) - {fact["port_name"], fact["runner_name"]})
            ]
            meta = FORMS[form]
            seeds.append(Seed(
                seed_id=seed_id(form, fact["day"], region, locodes, source_hash),
                category=meta.category, difficulty=meta.difficulty, form=form, answerable=True, mmsi=0, asked_mmsi=0,
                vessel_name=None, vessel_type="all types", window_start=iso(day), window_end=iso(day + DAY),
                fact_sql="sql/busiest_ports.sql", fact_sql_digest=digest, fact_params=params, fact=fact,
                source_hash=source_hash, context=spec, n_context_records=len(day_calls), grounding=grounding,
                region=region,
            ))
    return seeds


@register_renderer("port_day")
def render_port_day(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    calls = inputs.fact("port_calls")
    calls = calls.assign(arrival=pd.to_datetime(calls["arrival"]), departure=pd.to_datetime(calls["departure"]))
    day = pd.Timestamp(spec.start)
    rows = _day_calls(calls, list(spec.get("locodes")), day)
    lines = [f"Port calls overlapping {day:%Y-%m-%d} (00:00-24:00 UTC) at the ports of the {spec.get('region')} area "
             "in the data:"]
    stamp = lambda t: pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    if fmt == "table":
        lines.append("mmsi|port|locode|arrival|departure")
        lines += [f"{int(r.mmsi)}|{r.port_name}|{r.locode}|{stamp(r.arrival)}|{stamp(r.departure)}"
                  for r in rows.itertuples(index=False)]
    else:
        lines += [json.dumps({"mmsi": int(r.mmsi), "port": r.port_name, "locode": r.locode, "arrival": stamp(r.arrival),
                              "departure": stamp(r.departure)}) for r in rows.itertuples(index=False)]
    rule = ("A port is busier when more distinct vessels (MMSIs) have a call overlapping the day; vessel time in port "
            "counts each call's minutes inside the day.")
    call_params = inputs.fact_params.get("port_calls", {})
    if call_params:
        rule = (f"A port call runs from the first to the last report at or below {call_params['stopped_max_sog_kn']:g} kn "
                f"within {call_params['port_radius_nm']:g} nm of a port. " + rule)
    lines.append(rule)
    return "\n".join(lines)
