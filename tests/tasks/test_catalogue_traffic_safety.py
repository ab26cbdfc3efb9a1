"""Catalogue categories traffic and safety: seeds built from real facts of a small simulation,
contexts that hold (and let a reader recompute) the computed answer, offline-teacher examples that
pass the grounding gate, and planted errors that the gate catches. Plus handmade cases for the
guards that keep a fact out when its context could not give it."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.tasks.factories import catalogue_inputs

from tasks.catalogue import FORMS
from tasks.catalogue.base import POSITION_COLUMNS, CatalogueInputs, Tracks, render_context
from tasks.catalogue.safety import encounter_candidates, horizon_geometry
from tasks.catalogue.traffic import busiest_port_candidates, traffic_cell_candidates
from tasks.config import FactsConfig, GenerateConfig, TeacherConfig, ValidateConfig
from tasks.facts import FACT_QUERIES, fact_params
from tasks.sqlfiles import create_table_from_sql, run_sql, sql_digest
from tasks.teacher import TemplateTeacher, to_example
from tasks.validate import validate_example
from tests.sql.test_encounters import PARAMS as ENCOUNTER_PARAMS, offset, positions_table, track
from tests.sql.test_ports_calls import fact as run_fact, positions_db, report

BUILDERS = {"traffic": (traffic_cell_candidates, busiest_port_candidates), "safety": (encounter_candidates,)}
NM_PER_DEG = 3440.065 * math.pi / 180


@pytest.fixture(scope="module")
def sim(sim30):
    """Facts of a 30-vessel, 24-hour simulation, and the catalogue inputs over them."""
    staged, facts, _ = sim30
    inputs = catalogue_inputs(staged, facts)
    seeds = {category: [s for builder in builders for s in builder(inputs)] for category, builders in BUILDERS.items()}
    return inputs, seeds


_RENDERED: dict = {}


def _rendered(seed, inputs, fmt):
    """The seed's context text; seeds on equal records render it once per format (the renderers
    read only the spec and the seed's vessel, which equal specs share)."""
    key = (id(inputs), seed.context, seed.vessel_name, fmt)
    if key not in _RENDERED:  # the cache holds inputs too, so its id is not reused while cached
        _RENDERED[key] = (inputs, render_context(seed.context, seed, inputs, fmt))
    return _RENDERED[key][1]


def _records(context: str, fmt: str) -> list[dict]:
    """The record lines of a rendered context, as dicts (table header names = JSON keys)."""
    lines = context.splitlines()
    if fmt == "jsonl":
        return [json.loads(line) for line in lines if line.startswith("{")]
    at = next(i for i, line in enumerate(lines) if line.startswith("mmsi|"))
    header, out = lines[at].split("|"), []
    for line in lines[at + 1:]:
        parts = line.split("|")
        if len(parts) != len(header):
            break
        out.append(dict(zip(header, parts)))
    return out


def _example(seed, inputs, fmt, corrupt_share):
    seed = type(seed)(**{**seed.to_dict(), "context": _rendered(seed, inputs, fmt)})
    return to_example(seed, TemplateTeacher(TeacherConfig(corrupt_share=corrupt_share), seed=2).generate(seed), 2)


# ------------------------------------------------------------------ on the simulation's facts

@pytest.mark.parametrize("category", ["traffic", "safety"])
def test_builders_seed_every_form_at_every_difficulty(sim, category):
    inputs, seeds = sim
    registered = {name for name, form in FORMS.items() if form.category == category}
    made = {s.form for s in seeds[category]}
    assert made == registered and len(registered) >= 4
    assert {FORMS[f].difficulty for f in made} == {"easy", "medium", "hard"}
    for s in seeds[category]:
        assert s.category == category and s.answerable and s.region != "unknown"
        assert s.fact_sql in ("sql/traffic_density.sql", "sql/busiest_ports.sql", "sql/close_encounters.sql")
        fact = s.fact_sql.removeprefix("sql/").removesuffix(".sql")
        assert s.fact_params == inputs.fact_params[fact] and s.fact_sql_digest == inputs.fact_digests[fact] and s.source_hash
    assert len({s.seed_id for s in seeds[category]}) == len(seeds[category])


@pytest.mark.parametrize("category", ["traffic", "safety"])
def test_questions_name_only_the_window_and_vessel_so_unanswerable_variants_can_reuse_them(category):
    # an unanswerable seed asks a form's question about another vessel or day, with no fact values
    plain = {"who": "vessel 367123999", "Who": "Vessel 367123999", "start": "06:00", "end": "07:00", "day": "2024-02-01"}
    for form in (f for f in FORMS.values() if f.category == category):
        assert len(form.questions) >= 3 and len(form.answers) >= 2 and len(form.reasoning) >= 2 and form.plant
        for question in form.questions:
            question.format(**plain)


def test_forms_on_the_same_records_share_one_context_so_they_chain_into_dialogues(sim):
    _, seeds = sim
    forms_by_context = defaultdict(set)
    for s in seeds["traffic"] + seeds["safety"]:
        forms_by_context[s.context].add(s.form)
    kinds = defaultdict(int)
    for spec, forms in forms_by_context.items():
        kinds[spec.kind] = max(kinds[spec.kind], len(forms))
    assert kinds == {"cell_hour": 3, "cell_hours": 2, "port_day": 2, "encounter": 4}


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_contexts_render_within_the_record_limit(sim, fmt):
    inputs, seeds = sim
    for s in seeds["traffic"] + seeds["safety"]:
        records = _records(_rendered(s, inputs, fmt), fmt)
        assert len(records) == s.n_context_records <= inputs.cfg.max_context_records, s.form


def test_every_candidate_passes_the_gate_and_every_planted_error_is_caught(sim):
    inputs, seeds = sim
    cfg = ValidateConfig()
    for s in seeds["traffic"] + seeds["safety"]:
        clean = _example(s, inputs, "table", 0.0)
        verdict = validate_example(clean, cfg)
        assert verdict.keep, (s.form, verdict, clean["answer"])
        dirty = _example(s, inputs, "table", 1.0)
        assert dirty["planted_error"], s.form
        verdict = validate_example(dirty, cfg)
        assert not verdict.keep and verdict.reason in ("ungrounded_number", "ungrounded_time"), (s.form, dirty["answer"])
    # the JSON-lines format is only another layout of the same records
    for s in seeds["traffic"][::7] + seeds["safety"]:
        assert validate_example(_example(s, inputs, "jsonl", 0.0), cfg).keep


def _bounds(context: str) -> tuple[float, float, float, float]:
    head = context.splitlines()[0]
    lat = head.split(" lat ")[1].split(",")[0].split(" to ")
    lon = head.split(" lon ")[1].split(" (")[0].split(" to ")
    return float(lat[0]), float(lat[1]), float(lon[0]), float(lon[1])


def _types(context: str) -> dict[int, str]:
    line = next(line for line in context.splitlines() if line.startswith("Vessel types"))
    pairs = [item.split(" ", 1) for item in line.split(": ", 1)[1].split("; ")]
    return {int(m): t for m, t in pairs}


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_cell_counts_are_recomputed_from_the_context(sim, fmt):
    inputs, seeds = sim
    checked = set()
    for s in seeds["traffic"]:
        if s.context.kind not in ("cell_hour", "cell_hours"):
            continue
        context = _rendered(s, inputs, fmt)
        records, types = _records(context, fmt), _types(context)
        lat0, lat1, lon0, lon1 = _bounds(context)
        assert all(lat0 <= float(r["lat"]) < lat1 + 1e-5 and lon0 <= float(r["lon"]) < lon1 + 1e-5 for r in records)
        f = s.fact
        if s.context.kind == "cell_hour":
            hour = pd.Timestamp(f["hour_start"]).strftime("%H:")
            assert all(r["time"].startswith(hour) for r in records)
            mmsis = sorted({int(r["mmsi"]) for r in records})
            assert (mmsis, len(records)) == (f["mmsis"], f["n_reports"]) and len(mmsis) == f["n_vessels"]
            by_type = defaultdict(int)
            for m in mmsis:
                by_type[types[m]] += 1
            assert dict(by_type) == f["by_type"]
        else:
            per_hour = defaultdict(set)
            for r in records:
                per_hour[r["time"][:2]].add(int(r["mmsi"]))
            hours = [pd.Timestamp(h["start"]).strftime("%H") for h in f["hours"]]
            assert [len(per_hour[h]) for h in hours] == [h["vessels"] for h in f["hours"]]
            if "busiest_hour" in f:
                counts = {h: len(v) for h, v in per_hour.items()}
                assert max(counts, key=counts.get) == pd.Timestamp(f["busiest_hour"]).strftime("%H")
        checked.add(s.form)
    assert checked == {"cell_vessel_count", "cell_vessel_list", "cell_type_mix", "cell_busiest_hour", "cell_hour_change"}


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_busiest_port_is_recomputed_from_the_listed_calls(sim, fmt):
    inputs, seeds = sim
    port_seeds = [s for s in seeds["traffic"] if s.context.kind == "port_day"]
    assert {s.form for s in port_seeds} == {"busiest_port", "port_time_in_port"}
    for s in port_seeds:
        records = _records(_rendered(s, inputs, fmt), fmt)
        day = pd.Timestamp(s.window_start)
        vessels, minutes = defaultdict(set), defaultdict(float)
        for r in records:
            vessels[r["locode"]].add(r["mmsi"])
            start = max(pd.Timestamp(r["arrival"]), day)
            end = min(pd.Timestamp(r["departure"]), day + pd.Timedelta(days=1))
            minutes[r["locode"]] += (end - start).total_seconds() / 60
        if s.form == "busiest_port":
            top = max(vessels, key=lambda c: len(vessels[c]))
            assert (top, len(vessels[top])) == (s.fact["locode"], s.fact["vessels"])
        else:
            top = max(minutes, key=minutes.get)
            assert top == s.fact["locode"] and minutes[top] == pytest.approx(s.fact["vessel_minutes"], abs=0.01)


def _cpa_from_reports(ra: dict, rb: dict) -> dict:
    """CPA / TCPA / course difference / situation of two reports, by the rule the context states."""
    ta, tb = (pd.Timestamp(f"2000-01-01 {r['time']}") for r in (ra, rb))
    t0 = max(ta, tb)
    vel = lambda r: (float(r["sog_kn"]) * math.sin(math.radians(float(r["cog_deg"]))),  # noqa: E731
                     float(r["sog_kn"]) * math.cos(math.radians(float(r["cog_deg"]))))
    (vae, van), (vbe, vbn) = vel(ra), vel(rb)
    mid = math.radians((float(ra["lat"]) + float(rb["lat"])) / 2)
    east = (float(rb["lon"]) - float(ra["lon"])) * NM_PER_DEG * math.cos(mid)
    north = (float(rb["lat"]) - float(ra["lat"])) * NM_PER_DEG
    lead_a, lead_b = (t0 - ta).total_seconds() / 3600, (t0 - tb).total_seconds() / 3600
    east, north = east + vbe * lead_b - vae * lead_a, north + vbn * lead_b - van * lead_a
    re_, rn = vbe - vae, vbn - van
    t = -(east * re_ + north * rn) / (re_ ** 2 + rn ** 2)
    diff = 180 - abs(180 - (float(rb["cog_deg"]) - float(ra["cog_deg"]) + 720) % 360)
    # bearings 20 minutes before the CPA
    back = t - 20 / 60
    bearing = math.degrees(math.atan2(east + re_ * back, north + rn * back)) % 360
    b_from_a = (bearing - float(ra["cog_deg"])) % 360
    a_from_b = (bearing + 180 - float(rb["cog_deg"])) % 360
    if diff >= 170:
        situation = "head_on"
    elif diff < 67.5 and any(112.5 < x < 247.5 for x in (b_from_a, a_from_b)):
        situation = "overtaking"
    else:
        situation = "crossing"
    return {"cpa_nm": math.hypot(east + re_ * t, north + rn * t), "tcpa_minutes": t * 60, "course_difference_deg": diff,
            "situation": situation, "detected": t0.strftime("%H:%M:%S")}


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_cpa_tcpa_and_situation_are_recomputed_from_the_two_vessels_reports(sim, fmt):
    inputs, seeds = sim
    situations = set()
    for s in [s for s in seeds["safety"] if s.form == "encounter_cpa"]:
        context = _rendered(s, inputs, fmt)
        assert "CPA at most 0.5 nm within 20 minutes" in context
        records = _records(context, fmt)
        first = {}
        for r in records:  # each vessel's first report at 2 kn or more, as the rule line says
            if r["sog_kn"] not in ("NA", None) and float(r["sog_kn"]) >= 2.0 and int(r["mmsi"]) not in first:
                first[int(r["mmsi"])] = r
        f = s.fact
        got = _cpa_from_reports(first[f["mmsi_a"]], first[f["mmsi_b"]])
        assert got["cpa_nm"] == pytest.approx(f["cpa_nm"], abs=0.01)
        assert got["tcpa_minutes"] == pytest.approx(f["tcpa_minutes"], abs=0.1)
        assert got["course_difference_deg"] == pytest.approx(f["course_difference_deg"], abs=0.05)
        assert (got["situation"], got["detected"]) == (f["situation"], pd.Timestamp(f["detected_at"]).strftime("%H:%M:%S"))
        situations.add(f["situation"])
    assert situations == {"head_on", "crossing", "overtaking"}


# ------------------------------------------------------------------ handmade cases

def _inputs(tmp_path: Path, positions: pd.DataFrame, facts: dict[str, pd.DataFrame], params: dict, ports=None,
            particulars: dict[int, tuple[str, int | None]] = ()) -> CatalogueInputs:
    paths = {}
    facts = dict(facts)
    facts["vessel_particulars"] = pd.DataFrame(
        [{"mmsi": m, "vessel_name": n, "vessel_type": t} for m, (n, t) in dict(particulars).items()],
        columns=["mmsi", "vessel_name", "vessel_type"])
    for name, frame in facts.items():
        paths[name] = tmp_path / f"{name}.parquet"
        frame.to_parquet(paths[name])
    ports = ports if ports is not None else pd.DataFrame(columns=["port_name", "locode", "lat", "lon"])
    return CatalogueInputs(tmp_path / "positions.parquet", Tracks(positions), ports, paths, params,
                           {n: sql_digest(n) for n in facts if n in FACT_QUERIES}, GenerateConfig())


def _staged(con) -> pd.DataFrame:
    return con.execute(
        "select mmsi, ts, lat, lon, sog_kn, cog_deg, cast(null as integer) as heading_deg, "
        "cast(null as integer) as nav_status, row_hash from stg_ais_positions").df()


def test_a_cell_hour_is_asked_only_where_its_reports_give_the_counts(tmp_path):
    t0 = datetime(2024, 1, 15, 6, 0, 0)
    rows = [report(366000201, t0 + timedelta(minutes=m), 33.72, -118.25) for m in (0, 10)]             # cargo
    rows += [report(366000202, t0 + timedelta(minutes=5), 33.75, -118.22, vessel_type=80)]             # tanker
    rows += [report(366000203, t0 + timedelta(minutes=m), 33.52, -118.25) for m in (0, 10)]  # + a flagged vessel
    rows += [report(366000204, t0 + timedelta(minutes=5), 33.55, -118.22)]
    rows += [report(366000205, t0 + timedelta(minutes=m), 33.32, -118.25, vessel_type=70) for m in (0, 9)]  # listed as tanker
    rows += [report(366000206, t0 + timedelta(minutes=5), 33.35, -118.22)]
    flagged = [report(366000207, t0 + timedelta(minutes=7), 33.53, -118.23)]
    con = positions_db(rows, flagged=flagged)
    density = run_fact(con, "traffic_density")
    types = {366000201: 70, 366000202: 80, 366000203: 70, 366000204: 70, 366000205: 80, 366000206: 70, 366000207: 70}
    inputs = _inputs(tmp_path, _staged(con), {"traffic_density": density},
                     {"traffic_density": fact_params("traffic_density", FactsConfig())},
                     particulars={m: ("SHIP", t) for m, t in types.items()})
    seeds = traffic_cell_candidates(inputs)
    asked = {(s.fact["cell_lat_idx"], s.fact["cell_lon_idx"]) for s in seeds}
    assert asked == {(337, -1183)}  # not 335 (a flagged report counts, unseen) nor 333 (type shown differs)
    mix = next(s for s in seeds if s.form == "cell_type_mix")
    assert mix.fact["by_type"] == {"cargo": 1, "tanker": 1} and mix.fact["n_reports"] == 3
    example = _example(mix, inputs, "table", 0.0)
    assert validate_example(example, ValidateConfig()).keep
    assert "cargo: 1 vessel" in example["answer"] and "no single type dominated" in example["answer"]


def _calls_facts(calls: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """port_calls rows (mmsi, locode, port, arrival, departure) and busiest_ports run on them."""
    frame = pd.DataFrame(calls, columns=["mmsi", "locode", "port_name", "arrival", "departure"])
    frame["arrival"], frame["departure"] = pd.to_datetime(frame["arrival"]), pd.to_datetime(frame["departure"])
    con = duckdb.connect()
    con.register("calls_df", frame)
    con.execute("create table fact_port_calls as select * from calls_df")
    return frame, run_sql(con, "busiest_ports", {}).df()


PORTS = pd.DataFrame([("Long Beach", "USLGB", 33.75, -118.2), ("Los Angeles", "USLAX", 33.73, -118.26),
                      ("San Diego", "USSAN", 32.71, -117.17)], columns=["port_name", "locode", "lat", "lon"])


def test_busiest_port_needs_a_single_top_port_and_names_a_runner_up_only_when_unique(tmp_path):
    day = "2024-01-15"
    calls = [
        (366000301, "USLGB", "Long Beach", f"{day} 01:00", f"{day} 05:00"),
        (366000302, "USLGB", "Long Beach", "2024-01-14 22:00", f"{day} 02:00"),   # over midnight: 120 min count
        (366000303, "USLAX", "Los Angeles", f"{day} 03:00", f"{day} 04:00"),
        (366000304, "USLAX", "Los Angeles", f"{day} 06:00", f"{day} 07:30"),
        (366000305, "USSAN", "San Diego", f"{day} 08:00", f"{day} 09:00"),
    ]
    frame, busiest = _calls_facts(calls)
    inputs = _inputs(tmp_path, pd.DataFrame(columns=POSITION_COLUMNS), {"port_calls": frame, "busiest_ports": busiest},
                     {"busiest_ports": {}}, ports=PORTS)
    seeds = busiest_port_candidates(inputs)
    # Long Beach and Los Angeles tie at 2 vessels: no busiest-by-vessels question; time in port decides
    assert [s.form for s in seeds] == ["port_time_in_port"]
    assert (seeds[0].fact["locode"], seeds[0].fact["vessel_minutes"]) == ("USLGB", 360.0)

    calls.append((366000306, "USLGB", "Long Beach", f"{day} 10:00", f"{day} 11:00"))
    frame, busiest = _calls_facts(calls)
    inputs = _inputs(tmp_path, pd.DataFrame(columns=POSITION_COLUMNS), {"port_calls": frame, "busiest_ports": busiest},
                     {"busiest_ports": {}}, ports=PORTS)
    seed = next(s for s in busiest_port_candidates(inputs) if s.form == "busiest_port")
    assert (seed.fact["locode"], seed.fact["vessels"], seed.fact["runner_locode"]) == ("USLGB", 3, "USLAX")
    example = _example(seed, inputs, "table", 0.0)
    assert validate_example(example, ValidateConfig()).keep and "Los Angeles (USLAX)" in example["answer"]
    # stating a port that is not the answer is caught
    wrong = dict(example, messages=example["messages"][:-1] + [{"role": "assistant", "content": "San Diego was the busiest."}])
    assert validate_example(wrong, ValidateConfig()).reason == "ungrounded_entity"


def _encounter_inputs(tmp_path: Path, rows: list[tuple]) -> CatalogueInputs:
    con = positions_table(rows)
    create_table_from_sql(con, "fact_close_encounters", "close_encounters", ENCOUNTER_PARAMS)
    encounters = con.execute("select * from fact_close_encounters").df()
    positions = con.execute(
        "select mmsi, ts, lat, lon, sog_kn, cog_deg, cast(null as integer) as heading_deg, "
        "cast(null as integer) as nav_status, row_hash from stg_ais_positions").df()
    return _inputs(tmp_path, positions, {"close_encounters": encounters}, {"close_encounters": ENCOUNTER_PARAMS},
                   particulars={366000001: ("NORTHBOUND", 70), 366000002: ("SOUTHBOUND 2", 70)})


def test_head_on_pair_becomes_four_grounded_questions_and_a_glitched_report_keeps_it_out(tmp_path):
    meet, at = (36.0, -75.0), datetime(2024, 1, 15, 6, 30, 0)
    a = track(366000001, meet, at, 12.0, 0.0)
    b = track(366000002, offset(*meet, 0.2, 0.0), at, 10.0, 180.0, skew_s=20)
    seeds = encounter_candidates(_encounter_inputs(tmp_path, a + b))
    assert sorted(s.form for s in seeds) == ["encounter_courses", "encounter_cpa", "encounter_situation", "encounter_vessel"]
    f = seeds[0].fact
    assert f["situation"] == "head_on" and f["cpa_nm"] == pytest.approx(0.2, abs=0.005)
    assert horizon_geometry(f, 20.0)[2] == "head_on"
    situation = next(s for s in seeds if s.form == "encounter_situation")
    example = _example(situation, _encounter_inputs(tmp_path, a + b), "table", 0.0)
    assert validate_example(example, ValidateConfig()).keep
    assert "head-on" in example["answer"] and "180°" in example["answer"]
    # the answer must name the situation it was computed to be
    for replacement, reason in (("crossing", "ungrounded_entity"), ("close-quarters", "missing_required_value")):
        changed = re.sub("(?i)head-on", replacement, example["messages"][-1]["content"])
        wrong = dict(example, messages=example["messages"][:-1] + [{"role": "assistant", "content": changed}])
        assert validate_example(wrong, ValidateConfig()).reason == reason

    # b's first report in the kept bucket reads 45 kn: the query skips it (cargo tops out at 30 kn) and
    # dead-reckons b's next report, but a reader of the context would take the 45 kn one: not asked
    bucket = pd.Timestamp(f["detected_at"]).floor("10min")
    first_b = min(r[1] for r in b if r[1] >= bucket)
    glitched = [r[:4] + (45.0 if r[1] == first_b else r[4], r[5]) for r in b]
    inputs = _encounter_inputs(tmp_path, a + glitched)
    kept = inputs.fact("close_encounters")
    assert (pd.to_datetime(kept["bucket"]) == bucket).any()  # the query still finds the approach there
    assert all(pd.Timestamp(s.window_start) != bucket for s in encounter_candidates(inputs))
