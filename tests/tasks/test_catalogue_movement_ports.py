"""Movement and port-activity question forms, seeded from facts computed over a small simulation:
every form gets candidates at all three difficulties, contexts render within the record limit in
both formats, each answer can be recomputed from the rendered context alone, the offline teacher's
examples (dialogues included) pass the grounding gate, and its planted errors are caught."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.tasks.factories import catalogue_inputs

from tasks.catalogue import BUILDERS, FORMS
from tasks.catalogue.base import DIFFICULTIES, POSITION_COLUMNS, CatalogueInputs, Tracks, render_context
from tasks.catalogue.movement import movement_candidates
from tasks.catalogue.port_activity import port_area_rows, thinned_rows
from tasks.config import FactsConfig, GenerateConfig, TeacherConfig, ValidateConfig
from tasks.facts import fact_params, load_port_table
from tasks.geo import bearing_deg, destination, distance_nm
from tasks.ports import load_ports
from tasks.seeds import sample_seeds
from tasks.sqlfiles import create_table_from_sql
from tasks.teacher import TemplateTeacher, to_example
from tasks.validate import unit_tolerance, validate_example
from tests.conftest import row_hash

CATEGORIES = ("movement", "port_activity")
NEW_FORMS = ("course_changes", "time_underway", "anchorage_wait", "anchorage_vs_berth", "vessels_in_port")
FACTS = FactsConfig()


@pytest.fixture(scope="module")
def world(sim30):
    staged, facts, _ = sim30
    inputs = catalogue_inputs(staged, facts)
    candidates = [s for name, build in sorted(BUILDERS.items()) if name.split(":")[0] in CATEGORIES for s in build(inputs)]
    return inputs, candidates


@pytest.fixture(scope="module")
def rendered(world):
    """The sampled candidates with their table contexts, rendered once for the tests below."""
    inputs, candidates = world
    return [replace(s, context=render_context(s.context, s, inputs, "table")) for s in _sample(candidates)]


def _by_form(candidates):
    out = {}
    for s in candidates:
        out.setdefault(s.form, []).append(s)
    return out


def _sample(candidates, per_form=25):
    """Every candidate of the new forms, an even spread of the older ones (the test's time budget)."""
    out = []
    for form, seeds in _by_form(candidates).items():
        out += seeds if form in NEW_FORMS or form == "dwell" else seeds[:: max(1, len(seeds) // per_form)]
    return out


# ---- reading a rendered table context back, as a model would --------------------------------------

def parse_context(text: str) -> tuple[pd.DataFrame, dict[str, tuple[float, float]]]:
    """Reports (ts, lat, lon, sog, cog, status, and mmsi where shown) and listed ports of a table context."""
    lines = text.splitlines()
    day = re.search(r"\d{4}-\d{2}-\d{2}", lines[0]).group(0)
    rows, ports, in_ports = [], {}, False
    for line in lines[1:]:
        if line.startswith("Ports nearby"):
            in_ports = True
            continue
        parts = line.split("|")
        if in_ports and len(parts) == 4:
            ports[parts[1]] = (float(parts[2]), float(parts[3]))
        elif len(parts) in (6, 7) and re.fullmatch(r"\d{2}:\d{2}:\d{2}", parts[-6]):
            mmsi = int(parts[0]) if len(parts) == 7 else None
            t, lat, lon, sog, cog, status = parts[-6:]
            rows.append({"mmsi": mmsi, "time": t, "lat": float(lat), "lon": float(lon),
                         "sog": None if sog == "NA" else float(sog), "cog": None if cog == "NA" else float(cog),
                         "status": None if status == "NA" else status})
    frame = pd.DataFrame(rows)
    ts = pd.to_datetime(day + " " + frame["time"])
    frame["ts"] = ts + pd.to_timedelta((ts.diff() < pd.Timedelta(0)).cumsum(), unit="D")  # past midnight
    return frame, ports


def is_stopped(r) -> bool | None:
    if r.sog is not None and not pd.isna(r.sog):
        return r.sog <= FACTS.stopped_max_sog_kn
    if r.status is not None:
        return r.status in ("at anchor", "moored")
    return None


def count_major_turns(rows: pd.DataFrame) -> int:
    """Consecutive reports with SOG and COG, both faster than the stopped speed, turning > the limit."""
    n, prev = 0, None
    for r in rows.itertuples():
        if r.sog is None or pd.isna(r.sog) or r.cog is None or pd.isna(r.cog):
            continue
        cog = r.cog if r.sog > FACTS.stopped_max_sog_kn else -1.0
        if prev is not None and prev >= 0 and cog >= 0:
            n += abs(((cog - prev + 540) % 360) - 180) > FACTS.major_turn_deg
        prev = cog
    return n


def state_minutes(rows: pd.DataFrame, ports: dict[str, tuple[float, float]]) -> dict[str, float]:
    minutes = {"underway": 0.0, "moored": 0.0, "anchored": 0.0}
    state = None
    for r, nxt in zip(rows.itertuples(), list(rows["ts"].iloc[1:]) + [None]):
        stopped = is_stopped(r)
        if stopped is False:
            state = "underway"
        elif stopped:
            if r.status in ("moored", "at anchor"):
                state = "moored" if r.status == "moored" else "anchored"
            else:
                near = min((float(distance_nm(r.lat, r.lon, lat, lon)) for lat, lon in ports.values()), default=np.inf)
                state = ("moored" if near <= FACTS.berth_radius_nm else
                         "anchored" if near <= FACTS.port_radius_nm else "underway")
        if state is not None and nxt is not None:
            minutes[state] += (nxt - r.ts).total_seconds() / 60
    return minutes


def call_from_context(rows: pd.DataFrame, port: tuple[float, float]) -> tuple[pd.Timestamp, pd.Timestamp, list]:
    """Arrival, departure and stays (kind, start, end) as the rules printed with the context define them."""
    near = distance_nm(port[0], port[1], rows["lat"].to_numpy(), rows["lon"].to_numpy()) <= FACTS.port_radius_nm
    stopped = np.array([bool(is_stopped(r)) for r in rows.itertuples()])
    at_port = rows[near & stopped]
    arrival, departure = at_port["ts"].iloc[0], at_port["ts"].iloc[-1]
    stays = []
    for r in at_port.itertuples():
        d = float(distance_nm(port[0], port[1], r.lat, r.lon))
        kind = ("berth" if r.status == "moored" else "anchorage" if r.status == "at anchor"
                else "anchorage" if d > FACTS.berth_radius_nm else "berth")
        if stays and stays[-1][0] == kind:
            stays[-1][2] = r.ts
        else:
            stays.append([kind, r.ts, r.ts])
    return arrival, departure, stays


# ---- the catalogue's shape ----------------------------------------------------------------------

def test_every_form_has_candidates_at_all_three_difficulties(world):
    _, candidates = world
    by_form = _by_form(candidates)
    for category in CATEGORIES:
        forms = [f for f in FORMS.values() if f.category == category]
        assert len(forms) >= 4 and {f.difficulty for f in forms} == set(DIFFICULTIES), category
        for form in forms:
            assert by_form.get(form.name), f"no candidate for {form.name}"
            assert len(form.questions) >= 3 and len(form.answers) >= 2 and len(form.reasoning) >= 2, form.name
    assert len({s.seed_id for s in candidates}) == len(candidates)
    # "no major course change" windows are kept, but no more of them than windows with one
    turns = [s.fact["major_course_changes"] for s in by_form["course_changes"]]
    assert 0 < sum(t == 0 for t in turns) <= max(sum(t > 0 for t in turns), 10)


def test_contexts_render_in_both_formats_within_the_record_limit(world, rendered):
    inputs, candidates = world
    for seed in rendered:
        records = len(parse_context(seed.context)[0])
        assert 2 <= records == seed.n_context_records <= inputs.cfg.max_context_records, (seed.form, records)
    for seed in _sample(candidates, per_form=5)[::4]:
        text = render_context(seed.context, seed, inputs, "jsonl")
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert len(records) == seed.n_context_records and all({"time", "lat", "lon", "sog_kn"} <= set(r) for r in records)


def test_forms_of_one_window_or_call_share_a_context(world):
    _, candidates = world
    contexts = {}
    for s in candidates:
        contexts.setdefault(s.context, set()).add(s.form)
    assert any({"time_underway", "course_changes", "max_speed"} <= forms for forms in contexts.values())
    assert any({"anchorage_wait", "anchorage_vs_berth", "dwell"} <= forms for forms in contexts.values())


# ---- every answer follows from the rendered context ----------------------------------------------

def test_course_changes_and_time_underway_follow_from_the_context(rendered):
    by_form = _by_form(rendered)
    for seed in by_form["course_changes"] + by_form["time_underway"]:
        rows, ports = parse_context(seed.context)
        assert count_major_turns(rows) == seed.fact["major_course_changes"], seed.seed_id
        if seed.form == "time_underway":
            got = state_minutes(rows, ports)
            for state in ("underway", "moored", "anchored"):
                assert got[state] == pytest.approx(seed.fact[f"minutes_{state}"], abs=0.01), (seed.seed_id, state)


def test_stays_and_dwell_follow_from_the_thinned_call_context(world, rendered):
    _, candidates = world
    thinned = {s.seed_id for s in candidates if s.form == "dwell" and s.context.kind == "call_track"}
    assert thinned, "no call long enough to be thinned"
    by_form = _by_form(rendered)
    for seed in by_form["anchorage_wait"] + by_form["anchorage_vs_berth"] + by_form["dwell"]:
        rows, ports = parse_context(seed.context)
        arrival, departure, stays = call_from_context(rows, ports[seed.fact["locode"]])
        f = seed.fact
        assert (arrival, departure) == (pd.Timestamp(f["arrival"]), pd.Timestamp(f["departure"])), seed.seed_id
        if seed.form == "anchorage_wait":
            assert stays[0][0] == "anchorage" and stays[1][0] == "berth"
            assert (stays[0][2] - stays[0][1]).total_seconds() / 60 == pytest.approx(f["wait_minutes"])
            assert stays[1][1] == pd.Timestamp(f["berth_start"])
        if seed.form == "anchorage_vs_berth":
            for kind in ("anchorage", "berth"):
                total = sum((e - s).total_seconds() / 60 for k, s, e in stays if k == kind)
                assert total == pytest.approx(f[f"{kind}_minutes"]), (seed.seed_id, kind)


def test_vessels_in_port_follow_from_the_area_context(rendered):
    seeds = _by_form(rendered)["vessels_in_port"]
    assert any(s.fact["n_vessels"] >= 2 for s in seeds)
    for seed in seeds:
        text = seed.context
        rows, _ = parse_context(text)
        lat, lon = (float(x) for x in re.search(r"\((?:[A-Z0-9]{5}), (-?[\d.]+), (-?[\d.]+)\)", text).groups())
        assert (distance_nm(lat, lon, rows["lat"].to_numpy(), rows["lon"].to_numpy()) <= FACTS.port_radius_nm + 0.01).all()
        stopped = sorted({int(r.mmsi) for r in rows.itertuples() if is_stopped(r)})
        assert stopped == seed.fact["mmsis"] and seed.fact["n_vessels"] == len(stopped), seed.seed_id


# ---- the offline teacher and the grounding gate ---------------------------------------------------

class PlantSpy(TemplateTeacher):
    """The offline teacher, recording the value it planted (before, after) so the test can tell a
    real error from a plant that rounded back to the true value."""

    planted: tuple[str, str] | None = None

    def _plant_error(self, form, fact, values, rng):
        before = dict(values)
        key = super()._plant_error(form, fact, values, rng)
        self.planted = (before[key], values[key])
        return key


def _is_real_error(seed, planted: tuple[str, str], cfg: ValidateConfig) -> bool:
    """A planted value the gate must reject: outside the tolerance of the true value, and not equal
    (within tolerance) to another grounded value of the same kind."""
    key, how = FORMS[seed.form].plant
    if how == "time":
        return planted[0] != planted[1]
    truth = next(g for g in seed.grounding if g["name"] == key)
    wrong, tol = float(planted[1]), unit_tolerance(truth["kind"], cfg)
    same_kind = [g for g in seed.grounding if g["kind"] == truth["kind"]]
    return abs(wrong - truth["value"]) > tol + 1e-9 and not any(abs(wrong - g["value"]) <= tol + 1e-9 for g in same_kind)


def test_examples_pass_the_gate_and_planted_errors_are_caught(rendered):
    cfg = ValidateConfig()
    caught: dict[str, int] = {}
    for seed in rendered:
        clean = to_example(seed, TemplateTeacher(TeacherConfig(corrupt_share=0), 1).generate(seed), 1)
        verdict = validate_example(clean, cfg)
        assert verdict.keep, (seed.form, verdict, clean["answer"])
        spy = PlantSpy(TeacherConfig(corrupt_share=1), 1)
        dirty = to_example(seed, spy.generate(seed), 1)
        assert dirty["planted_error"] == FORMS[seed.form].plant[0]
        if _is_real_error(seed, spy.planted, cfg):
            verdict = validate_example(dirty, cfg)
            assert not verdict.keep, (seed.form, spy.planted, dirty["answer"])
            assert verdict.reason in ("ungrounded_number", "ungrounded_time", "missing_required_value")
            caught[seed.form] = caught.get(seed.form, 0) + 1
    assert set(NEW_FORMS) <= set(caught), caught


def test_dialogues_and_unanswerable_questions_on_these_forms_pass_the_gate(world):
    inputs, candidates = world
    cfg = GenerateConfig(max_seeds=160, multi_turn_share=0.6, unanswerable_share=0.1,
                         category_shares={"movement": 0.5, "port_activity": 0.5})
    seeds, stats = sample_seeds(candidates, cfg, set(inputs.tracks.by_mmsi), inputs.tracks.days, inputs.ports)
    chained = {f["form"] for s in seeds for f in s.followups} | {s.form for s in seeds if s.followups}
    assert {"course_changes", "time_underway", "anchorage_wait"} & chained, chained
    for seed in seeds:
        seed = replace(seed, context=render_context(seed.context, seed, inputs, cfg.context_format))
        example = to_example(seed, TemplateTeacher(TeacherConfig(corrupt_share=0), 2).generate(seed), 2)
        verdict = validate_example(example, ValidateConfig())
        assert verdict.keep, (example["forms"], seed.answerable, verdict, example["answer"])


# ---- small handmade cases -------------------------------------------------------------------------

def test_thinned_rows_keep_each_change_with_its_neighbours_and_one_report_per_slot():
    start = pd.Timestamp("2024-01-15T00:00:00")
    rows = pd.DataFrame({"ts": [start + pd.Timedelta(minutes=2 * i) for i in range(51)]})  # 00:00 .. 01:40
    keep = ((start + pd.Timedelta(minutes=20)).isoformat(), (start + pd.Timedelta(minutes=60)).isoformat())
    shown = thinned_rows(rows, start, start + pd.Timedelta(minutes=100), keep, 30)
    minutes = [int((t - start).total_seconds() // 60) for t in shown["ts"]]
    assert minutes == [0, 18, 20, 22, 30, 58, 60, 62, 90, 100]


def test_a_report_nearer_another_port_is_left_out_of_the_port_area():
    ports = load_ports(None)
    lax, lgb = (ports[ports["locode"] == c].iloc[0] for c in ("USLAX", "USLGB"))
    toward_lgb = float(bearing_deg(lax["lat"], lax["lon"], lgb["lat"], lgb["lon"]))
    at_lax = destination(lax["lat"], lax["lon"], toward_lgb + 90, 0.5)
    between = destination(lax["lat"], lax["lon"], toward_lgb, 2.5)  # within 3 nm of LAX, nearer LGB
    t0 = pd.Timestamp("2024-01-15T06:00:00")
    positions = pd.DataFrame([
        {"mmsi": m, "ts": t0 + pd.Timedelta(minutes=k), "lat": p[0], "lon": p[1], "sog_kn": 0.1, "cog_deg": 0.0,
         "heading_deg": None, "nav_status": None, "row_hash": f"{m}{k}"}
        for m, p in ((366000001, at_lax), (366000002, between)) for k in range(3)
    ])
    inputs = CatalogueInputs(Path("."), Tracks(positions), ports, {}, {}, {}, GenerateConfig())
    end = t0 + pd.Timedelta(minutes=15)
    assert set(port_area_rows(inputs, "USLAX", t0, end, 3.0)["mmsi"]) == {366000001}
    assert set(port_area_rows(inputs, "USLGB", t0, end, 3.0)["mmsi"]) == {366000002}


def _handmade_movement_seeds(tmp_path, glitch_sog_kn=None):
    """East 20 min, north 20 min (one 90-degree turn), then 20 min stopped 0.5 nm from Long Beach
    with no status; glitch_sog_kn: the 10th report's SOG. Returns (seeds by form, inputs)."""
    ports = load_ports(None)
    lgb = ports[ports["locode"] == "USLGB"].iloc[0]
    berth = destination(lgb["lat"], lgb["lon"], 200.0, 0.5)
    leg_nm = 10.0 * 20 / 60
    corner = destination(*berth, 180.0, leg_nm)
    start = destination(*corner, 270.0, leg_nm)
    t0, rows = pd.Timestamp("2024-01-15T06:00:00"), []
    for i in range(60):
        if i < 20:
            (lat, lon), sog, cog = destination(*start, 90.0, leg_nm * i / 20), 10.0, 90.0
        elif i < 40:
            (lat, lon), sog, cog = destination(*corner, 0.0, leg_nm * (i - 20) / 20), 10.0, 0.0
        else:
            (lat, lon), sog, cog = berth, 0.0, 0.0
        rows.append({"mmsi": 366000003, "ts": t0 + pd.Timedelta(minutes=i), "lat": lat, "lon": lon, "sog_kn": sog,
                     "cog_deg": cog, "heading_deg": None, "nav_status": None, "vessel_name": "TEST TURN",
                     "vessel_type": 70, "row_hash": row_hash(f"h{i:02d}")})
    if glitch_sog_kn is not None:
        rows[10]["sog_kn"] = glitch_sog_kn
    positions = pd.DataFrame(rows)
    con = duckdb.connect()
    con.register("hand", positions)
    con.execute("create table stg_ais_positions as select * from hand")
    load_port_table(con, ports)
    params = fact_params("vessel_movement", FACTS)
    create_table_from_sql(con, "fact_vessel_movement", "vessel_movement", params)
    con.execute("copy fact_vessel_movement to $p (format parquet)", {"p": str(tmp_path / "vm.parquet")})
    inputs = CatalogueInputs(tmp_path, Tracks(positions[POSITION_COLUMNS]), ports, {"vessel_movement": tmp_path / "vm.parquet"},
                             {"vessel_movement": params}, {"vessel_movement": "d"}, GenerateConfig(max_context_records=60))
    return {s.form: s for s in movement_candidates(inputs)}, inputs


def test_a_handmade_turn_and_berth_give_the_expected_movement_seeds(tmp_path):
    """40 minutes underway, 19 moored (the last report has no next), 1 major change."""
    seeds, inputs = _handmade_movement_seeds(tmp_path)
    assert seeds["course_changes"].fact["major_course_changes"] == 1
    fact = seeds["time_underway"].fact
    assert (fact["minutes_underway"], fact["minutes_moored"], fact["minutes_anchored"]) == pytest.approx((40, 19, 0))
    text = render_context(seeds["time_underway"].context, seeds["time_underway"], inputs, "table")
    assert "Long Beach|USLGB" in text and "more than 45 degrees" in text
    assert seeds["time_underway"].context == seeds["max_speed"].context  # one context: a dialogue can chain them


def test_a_speed_no_cargo_ship_makes_is_not_asked_as_the_windows_top_speed(tmp_path):
    """One report at 80 kn (a cargo ship makes at most 30): the gate would drop an answer stating that
    top speed, so the window gets no max_speed question; its mean (11 kn) and distance still do."""
    seeds, _ = _handmade_movement_seeds(tmp_path, glitch_sog_kn=80.0)
    assert "max_speed" not in seeds and {"mean_speed", "distance_run", "course_changes", "time_underway"} <= set(seeds)
    seeds, _ = _handmade_movement_seeds(tmp_path, glitch_sog_kn=25.0)  # fast for a cargo ship, but possible
    assert {"max_speed", "mean_speed", "distance_run"} <= set(seeds)
