"""Catalogue categories identity and anomalies: candidates from real facts of a small simulation,
contexts that hold what the answer needs, and template answers the grounding gate keeps (and
catches when a value is planted wrong)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.catalogue import BUILDERS, FORMS
from tasks.catalogue.anomalies import gap_candidates, jump_candidates, loiter_candidates, received_tracks
from tasks.catalogue.base import DIFFICULTIES, POSITION_COLUMNS, CatalogueInputs, Tracks, render_context
from tasks.catalogue.identity import mid_excerpt, particulars_candidates
from tasks.config import GenerateConfig, TeacherConfig, ValidateConfig
from tasks.geo import distance_nm
from tasks.ports import load_ports
from tasks.seeds import build_seeds, read_seeds
from tasks.teacher import TemplateTeacher, to_example
from tasks.validate import validate_example

CATEGORIES = ("identity", "anomalies")
MINE = {
    "identity": {"ship_type", "vessel_identifiers", "vessel_size", "flag_state", "vessel_profile", "conflict_reports",
                 "identity_conflict"},
    "anomalies": {"gap_start", "gap_duration", "gap_distance", "jump_report", "jump_distance", "jump_speed",
                  "loiter_start", "loiter_end", "loiter_duration", "implausible_speed_start", "implausible_speed_peak",
                  "implausible_speed_why"},
}
REPORT_RE = re.compile(r"^(\d\d:\d\d:\d\d)\|(-?[\d.]+)\|(-?[\d.]+)\|([\d.]+|NA)\|([\d.]+|NA)\|(.*)$")


@pytest.fixture(scope="module")
def run(sim30):
    """A 30-vessel, 24-hour simulation staged and turned into facts (shared by the catalogue tests)."""
    return sim30


def _inputs(run, **cfg) -> CatalogueInputs:
    staged, facts, _ = run
    positions = pd.read_parquet(staged.positions_path, columns=POSITION_COLUMNS)
    return CatalogueInputs(staged.positions_path, Tracks(positions), load_ports(None), facts.paths, facts.params,
                           facts.digests, GenerateConfig(**cfg))


@pytest.fixture(scope="module")
def inputs(run):
    return _inputs(run)


@pytest.fixture(scope="module")
def wide(run):
    """Contexts up to 100 records: whole loiters and long identity conflicts fit."""
    return _inputs(run, max_context_records=100)


def _candidates(inputs: CatalogueInputs) -> list:
    return [s for name, b in sorted(BUILDERS.items()) if name.split(":")[0] in CATEGORIES for s in b(inputs)]


@pytest.fixture(scope="module")
def candidates(inputs, wide):
    """Every candidate at the default cap, plus the forms only a wider cap allows."""
    narrow = _candidates(inputs)
    extra = [s for s in _candidates(wide) if s.form not in {c.form for c in narrow}]
    return [(s, inputs) for s in narrow] + [(s, wide) for s in extra]


def _reports(text: str) -> pd.DataFrame:
    rows = [m.groups() for line in text.splitlines() if (m := REPORT_RE.match(line))]
    df = pd.DataFrame(rows, columns=["time", "lat", "lon", "sog", "cog", "status"])
    df[["lat", "lon"]] = df[["lat", "lon"]].astype(float)
    df["sog"] = pd.to_numeric(df["sog"], errors="coerce")
    df["t"] = pd.to_timedelta(df["time"]).dt.total_seconds() / 60
    return df


def _hms(iso: str) -> str:
    return pd.Timestamp(iso).strftime("%H:%M:%S")


def test_forms_cover_three_difficulties_in_each_category():
    for category, names in MINE.items():
        forms = {n: f for n, f in FORMS.items() if f.category == category}
        assert names <= set(forms), names - set(forms)  # no other module re-registered one of these names
        assert {f.difficulty for f in forms.values()} == set(DIFFICULTIES)
        assert len(forms) >= 4
        for name in names:
            f = FORMS[name]
            assert len(f.questions) >= 3 and len(f.answers) >= 2 and len(f.reasoning) >= 2 and f.plant
            # questions only use what an unanswerable variant can fill in
            assert set(re.findall(r"{(\w+)}", " ".join(f.questions))) <= {"who", "Who", "start", "end", "day"}


def test_each_builder_makes_every_form_it_registers(candidates, inputs):
    made = {s.form for s, _ in candidates}
    assert made == MINE["identity"] | MINE["anomalies"]
    # the simulated loiters are longer than the default context: only their start and end are asked
    default_forms = {s.form for s in _candidates(inputs)}
    assert "loiter_duration" not in default_forms and {"loiter_start", "loiter_end"} <= default_forms
    counts = pd.Series([s.form for s, _ in candidates]).value_counts()
    assert counts["ship_type"] == 30  # every simulated vessel broadcasts a known type


def test_seeds_are_complete_and_contexts_render_within_the_cap(candidates):
    for seed, inp in candidates:
        assert seed.category in CATEGORIES and seed.answerable and seed.mmsi == seed.asked_mmsi > 0
        assert seed.fact_sql.startswith("sql/") and Path(seed.fact_sql).name.removesuffix(".sql") in inp.fact_paths
        assert seed.vessel_type != "unknown type" and seed.region != "unknown"
        json.dumps(seed.fact)  # JSON-able
        assert any(g["required"] for g in seed.grounding)
        for fmt in ("table", "jsonl"):
            text = render_context(seed.context, seed, inp, fmt)
            if fmt == "table":
                n = sum(1 for line in text.splitlines() if REPORT_RE.match(line))
            else:
                n = sum(1 for line in text.splitlines() if line.startswith("{") and '"time"' in line)
            assert n == seed.n_context_records, (seed.form, fmt, n, seed.n_context_records)
            assert 2 <= n <= inp.cfg.max_context_records
            assert f"MMSI {seed.mmsi}" in text


def test_template_answers_pass_the_gate_and_planted_errors_are_caught(candidates):
    cfg = ValidateConfig()
    for seed, inp in candidates:
        seed = type(seed)(**{**seed.__dict__, "context": render_context(seed.context, seed, inp, "table")})
        clean = to_example(seed, TemplateTeacher(TeacherConfig(corrupt_share=0), 7).generate(seed), 7)
        verdict = validate_example(clean, cfg)
        assert verdict.keep, (seed.form, verdict, clean["answer"])
        dirty = to_example(seed, TemplateTeacher(TeacherConfig(corrupt_share=1), 7).generate(seed), 7)
        assert dirty["planted_error"], seed.form
        assert not validate_example(dirty, cfg).keep, (seed.form, dirty["answer"])


def _one_per_form(candidates):
    seen = {}
    for seed, inp in candidates:
        seen.setdefault(seed.form, (seed, inp))
    return seen


def test_anomaly_values_are_derivable_from_the_rendered_reports(candidates):
    for form, (seed, inp) in _one_per_form(candidates).items():
        if FORMS[form].category != "anomalies":
            continue
        f, rows = seed.fact, _reports(render_context(seed.context, seed, inp, "table"))
        if form.startswith("gap_"):
            step = rows["t"].diff()
            gaps = rows.index[step > inp.fact_params["ais_gaps"]["gap_minutes"]]
            assert len(gaps) == 1
            before, after = rows.loc[gaps[0] - 1], rows.loc[gaps[0]]
            assert (before["time"], after["time"]) == (_hms(f["gap_start"]), _hms(f["gap_end"]))
            assert after["t"] - before["t"] == pytest.approx(f["minutes"], abs=1e-6)
            nm = distance_nm(before["lat"], before["lon"], after["lat"], after["lon"])
            assert nm == pytest.approx(f["distance_nm"], abs=0.01)
            assert nm / (f["minutes"] / 60) == pytest.approx(f["implied_sog_kn"], abs=0.01)
        elif form.startswith("jump_"):
            lat, lon = rows["lat"].to_numpy(), rows["lon"].to_numpy()
            # the jump: the report farthest from both its neighbours
            detour = distance_nm(lat[:-2], lon[:-2], lat[1:-1], lon[1:-1]) + distance_nm(lat[1:-1], lon[1:-1], lat[2:], lon[2:])
            k = int(np.argmax(detour)) + 1
            assert rows["time"].iloc[k] == _hms(f["ts"])
            hours = (rows["t"].iloc[k] - rows["t"].iloc[k - 1]) / 60
            to_prev = distance_nm(lat[k - 1], lon[k - 1], lat[k], lon[k])
            assert to_prev == pytest.approx(f["dist_prev_nm"], abs=0.01)
            assert distance_nm(lat[k], lon[k], lat[k + 1], lon[k + 1]) == pytest.approx(f["dist_next_nm"], abs=0.01)
            assert to_prev / hours == pytest.approx(f["knots_from_previous"], rel=1e-3)
        elif form.startswith("loiter_"):
            slow = rows["sog"] <= f["loiter_max_sog_kn"]
            runs = (slow != slow.shift()).cumsum()[slow]
            longest = rows[slow].groupby(runs).agg(first=("time", "first"), last=("time", "last"), n=("time", "size"))
            run = longest.loc[longest["n"].idxmax()]
            if form in ("loiter_start", "loiter_duration"):
                assert run["first"] == _hms(f["loiter_start"])
            if form in ("loiter_end", "loiter_duration"):
                assert run["last"] == _hms(f["loiter_end"])
            if form == "loiter_duration":
                assert run["n"] == f["n_reports"]
        elif form.startswith("implausible_speed_"):
            fast = rows[rows["sog"] > f["limit_kn"]]
            assert fast["time"].iloc[0] == _hms(f["anomaly_start"]) and fast["time"].iloc[-1] == _hms(f["anomaly_end"])
            assert fast["sog"].max() == pytest.approx(f["max_sog_kn"]) and len(fast) == f["n_reports"]
            assert f"ship type {f['vessel_type_code']} ({f['type_name']}): {f['limit_kn']:g} kn" in render_context(
                seed.context, seed, inp, "table")


def test_identity_values_are_derivable_from_the_rendered_context(candidates):
    for form, (seed, inp) in _one_per_form(candidates).items():
        if FORMS[form].category != "identity":
            continue
        f = seed.fact
        text = render_context(seed.context, seed, inp, "jsonl")
        if form in ("conflict_reports", "identity_conflict"):
            rows = _reports(render_context(seed.context, seed, inp, "table"))
            # the second transmitter: reports far away from the vessel's first position in the records
            away = distance_nm(rows["lat"].iloc[0], rows["lon"].iloc[0], rows["lat"], rows["lon"]) > f["identity_min_separation_nm"]
            second = rows[away]
            assert len(second) == f["n_reports_b"]
            assert (second["time"].iloc[0], second["time"].iloc[-1]) == (_hms(f["conflict_start"]), _hms(f["conflict_end"]))
            k = second.index[0]
            step = distance_nm(rows["lat"][k - 1], rows["lon"][k - 1], rows["lat"][k], rows["lon"][k])
            assert step == pytest.approx(f["separation_nm"], abs=0.01)
            continue
        static = json.loads(text.splitlines()[2])
        mid = int(str(seed.mmsi)[:3])
        assert static["ship_type"] == f["vessel_type"] and static["name"] == f["vessel_name"]
        if form in ("flag_state", "vessel_profile"):
            assert f"{mid} {f['country']}" in text.split("ITU MID allocations (excerpt): ")[1].splitlines()[0]
        if form in ("ship_type", "vessel_profile"):
            entries = text.split("AIS ship type codes (excerpt): ")[1].splitlines()[0].split("; ")
            spans = [(e.split(" ", 1)[0], e.split(" ", 1)[1]) for e in entries]
            hits = [name for span, name in spans
                    if int(span.split("-")[0]) <= f["vessel_type"] <= int(span.split("-")[-1])]
            assert hits == [f["type_name"]]
        if form in ("vessel_size", "vessel_profile"):
            assert (static["length_m"], static["width_m"]) == (f["length_m"], f["width_m"])
        if form == "vessel_identifiers":
            assert static["imo"].endswith(f["imo_number"]) and static["call_sign"] == f["call_sign"]


def test_dialogues_and_unanswerable_questions_from_these_categories_pass_the_gate(run, tmp_path):
    staged, facts, _ = run
    shares = {c: (1.0 / len(CATEGORIES) if c in CATEGORIES else 0.0) for c in
              ("identity", "movement", "port_activity", "traffic", "anomalies", "safety")}
    cfg = GenerateConfig(max_seeds=60, category_shares=shares, multi_turn_share=0.3, unanswerable_share=0.15)
    build_seeds(staged.positions_path, facts.paths, facts.params, facts.digests, None, cfg, tmp_path / "seeds.jsonl")
    seeds = read_seeds(tmp_path / "seeds.jsonl")
    assert {s.category for s in seeds} == set(CATEGORIES)
    assert any(s.followups for s in seeds) and any(not s.answerable for s in seeds)
    for seed in seeds:
        ex = to_example(seed, TemplateTeacher(TeacherConfig(corrupt_share=0), 3).generate(seed), 3)
        verdict = validate_example(ex, ValidateConfig())
        assert verdict.keep, (seed.form, seed.unanswerable, verdict, ex["answer"])


# ---------------------------------------------------------------------------------------------
# handmade cases

def _handmade_inputs(tmp_path: Path, positions: pd.DataFrame, facts: dict[str, pd.DataFrame],
                     params: dict | None = None) -> CatalogueInputs:
    staged = tmp_path / "staged"
    staged.mkdir(exist_ok=True)
    positions.to_parquet(staged / "positions.parquet")
    paths = {}
    for name, table in facts.items():
        paths[name] = tmp_path / f"{name}.parquet"
        table.to_parquet(paths[name])
    return CatalogueInputs(staged / "positions.parquet", Tracks(positions[POSITION_COLUMNS]), load_ports(None), paths,
                           params or {}, {n: "digest" for n in facts}, GenerateConfig())


def _track(mmsi: int, times: list[str], lat0: float = 33.0) -> pd.DataFrame:
    ts = pd.to_datetime(times)
    n = len(ts)
    return pd.DataFrame({
        "mmsi": mmsi, "ts": ts.astype("datetime64[us]"), "lat": lat0 + np.arange(n) * 0.001, "lon": -118.0,
        "sog_kn": 6.0, "cog_deg": 0.0, "heading_deg": np.nan, "nav_status": 0.0,
        "row_hash": [f"{mmsi}-{i}" for i in range(n)],
    })


def _gap_row(track: pd.DataFrame, i: int) -> dict:
    a, b = track.iloc[i], track.iloc[i + 1]
    minutes = (b.ts - a.ts).total_seconds() / 60
    nm = float(distance_nm(a.lat, a.lon, b.lat, b.lon))
    return {"mmsi": a.mmsi, "gap_start": a.ts, "gap_end": b.ts, "minutes": minutes, "start_lat": a.lat, "start_lon": a.lon,
            "end_lat": b.lat, "end_lon": b.lon, "distance_nm": nm, "implied_sog_kn": nm / (minutes / 60),
            "start_sog_kn": 6.0, "end_sog_kn": None, "vessel_name": None, "vessel_type": 70, "source_hash": f"h{i}"}


def test_gap_is_asked_only_when_the_records_show_it_alone_and_on_one_day(tmp_path):
    lone = _track(366000001, ["2024-01-15 10:00", "2024-01-15 10:05", "2024-01-15 11:00", "2024-01-15 11:05"])
    twin = _track(366000002, ["2024-01-15 10:00", "2024-01-15 10:45", "2024-01-15 10:50", "2024-01-15 11:40"])
    night = _track(366000003, ["2024-01-15 23:10", "2024-01-15 23:15", "2024-01-16 00:10", "2024-01-16 00:15"])
    gaps = pd.DataFrame([_gap_row(lone, 1), _gap_row(twin, 0), _gap_row(twin, 2), _gap_row(night, 1)])
    inputs = _handmade_inputs(tmp_path, pd.concat([lone, twin, night]), {"ais_gaps": gaps},
                              {"ais_gaps": {"gap_minutes": 30.0}})
    seeds = gap_candidates(inputs)
    assert {s.mmsi for s in seeds} == {366000001}  # two gaps in one context, or one across midnight: not asked
    assert {s.form for s in seeds} == {"gap_start", "gap_duration", "gap_distance"}
    assert len({s.context for s in seeds}) == 1  # one context: the three can form a dialogue
    text = render_context(seeds[0].context, seeds[0], inputs, "table")
    assert "10:05:00|" in text and "11:00:00|" in text and "more than 30 min apart" in text


def test_jump_needs_the_flagged_report_from_the_quarantine(tmp_path):
    track = _track(366000001, [f"2024-01-15 10:{m:02d}" for m in range(0, 20, 2)])
    jump = track.iloc[[5]].assign(lat=34.0, row_hash="jump")
    row = {"mmsi": 366000001, "ts": jump.ts.iloc[0], "lat": 34.0, "lon": -118.0, "sog_kn": 6.0,
           "prev_ts": track.ts.iloc[4], "prev_lat": track.lat.iloc[4], "prev_lon": -118.0,
           "next_ts": track.ts.iloc[6], "next_lat": track.lat.iloc[6], "next_lon": -118.0,
           "knots_from_previous": 900.0, "knots_to_next": 900.0, "off_track_nm": 59.7, "source_hash": "j"}
    kept = track.drop(index=5)
    inputs = _handmade_inputs(tmp_path, kept, {"anomaly_jumps": pd.DataFrame([row])})
    assert jump_candidates(inputs) == []  # the jumping report is not among the records: nothing to ask
    payload = jump.assign(heading_deg=None, ts=jump.ts.dt.strftime("%Y-%m-%d %H:%M:%S")).iloc[0].to_dict()
    pd.DataFrame([
        {"stage": "stage", "reason": "impossible_jump", "record_id": "row:6", "mmsi": "366000001", "payload": json.dumps(payload)},
        {"stage": "stage", "reason": "invalid_mmsi", "record_id": "row:99", "mmsi": "1", "payload": "{}"},
    ]).to_parquet(tmp_path / "staged" / "quarantine_positions.parquet")
    inputs = _handmade_inputs(tmp_path, kept, {"anomaly_jumps": pd.DataFrame([row])})
    assert len(received_tracks(inputs).by_mmsi[366000001]) == len(track)
    seeds = jump_candidates(inputs)
    assert {s.form for s in seeds} == {"jump_report", "jump_distance", "jump_speed"}
    text = render_context(seeds[0].context, seeds[0], inputs, "table")
    assert "10:10:00|34.00000|-118.00000" in text and seeds[0].n_context_records == len(track)


def test_static_context_needs_reports_that_broadcast_the_vessels_usual_fields(tmp_path):
    times = [f"2024-01-15 10:{m:02d}" for m in range(0, 40, 2)]
    static = {"vessel_name": "SEA STAR", "call_sign": "WDA1234", "imo": "IMO9000001", "vessel_type": 70, "length_m": 180.0,
              "width_m": 30.0, "draft_m": 9.5, "transceiver_class": "A", "destination": "LONG BEACH"}
    steady = _track(366000001, times).assign(**static)
    renamed = _track(367000002, times).assign(**static)  # first reports under an old name, last under the usual one
    renamed.loc[:4, "vessel_name"] = "OLD NAME"
    changing = _track(368000003, times).assign(**static)  # the name changes within both edges of its data
    changing.loc[[0, 19], "vessel_name"] = "OTHER"
    particulars = pd.DataFrame([{
        "mmsi": m, "mid": m // 1_000_000, "flag_country": "United States", "flag_iso2": "US", "vessel_name": "SEA STAR",
        "imo": "IMO9000001", "call_sign": "WDA1234", "vessel_type": 70, "vessel_type_name": "cargo", "length_m": 180.0,
        "width_m": 30.0, "transceiver_class": "A", "source_hash": f"p{m}",
    } for m in (366000001, 367000002, 368000003)])
    inputs = _handmade_inputs(tmp_path, pd.concat([steady, renamed, changing]), {"vessel_particulars": particulars})
    seeds = particulars_candidates(inputs)
    assert {s.mmsi for s in seeds} == {366000001, 367000002}
    late = next(s for s in seeds if s.mmsi == 367000002)
    assert late.context.start == "2024-01-15T10:30:00"  # its last reports, which broadcast the usual name
    assert {s.form for s in seeds} == {"ship_type", "vessel_identifiers", "vessel_size", "flag_state", "vessel_profile"}
    assert all(s.vessel_name is None for s in seeds)  # the question must not give the name away
    ident = next(s for s in seeds if s.form == "vessel_identifiers")
    assert {g["name"]: g["value"] for g in ident.grounding if g["required"]} == {
        "vessel_name": "SEA STAR", "call_sign": "WDA1234", "imo_number": 9000001}


def test_mid_excerpt_lists_the_vessels_state_among_others():
    excerpt = mid_excerpt(232001234, "United Kingdom")
    assert excerpt == mid_excerpt(232001234, "United Kingdom")  # stable per MMSI
    assert (232, "United Kingdom") in excerpt and len(excerpt) == 5
    others = [c for m, c in excerpt if m != 232]
    assert len(set(others)) == 4 and all("United Kingdom" not in c for c in others)


def test_loiter_start_and_end_contexts_show_the_first_and_last_hour(tmp_path):
    # 10:00-10:20 under way, 10:22-12:20 drifting (2 h, 60 reports: more than one context holds),
    # then under way again; 200 nm off the coast, clear of every port
    times = pd.date_range("2024-01-15 10:00", "2024-01-15 13:00", freq="2min")
    track = _track(366000001, [str(t) for t in times], lat0=30.0).assign(lon=-125.0, lat=30.0)
    slow = (track["ts"] > "2024-01-15 10:20") & (track["ts"] <= "2024-01-15 12:20")
    track.loc[slow, "sog_kn"] = 0.5
    start, end = track.loc[slow, "ts"].iloc[[0, -1]]
    row = {"mmsi": 366000001, "start": start, "end": end, "center_lat": 30.0, "center_lon": -125.0,
           "max_radius_nm": 0.0, "n_reports": int(slow.sum()), "minutes": (end - start).total_seconds() / 60,
           "mean_sog_kn": 0.5, "source_hash": "l"}
    params = {"loitering": {"port_radius_nm": 3.0, "loiter_max_sog_kn": 3.0, "loiter_min_minutes": 60.0,
                            "loiter_radius_nm": 1.0}, "ais_gaps": {"gap_minutes": 30.0}}
    inputs = _handmade_inputs(tmp_path, track, {"loitering": pd.DataFrame([row])}, params)
    seeds = {s.form: s for s in loiter_candidates(inputs)}
    assert set(seeds) == {"loiter_start", "loiter_end"}  # the whole loiter does not fit 40 records
    first = _reports(render_context(seeds["loiter_start"].context, seeds["loiter_start"], inputs, "table"))
    assert first["sog"].iloc[0] > 3 and first.loc[first["sog"] <= 3, "time"].iloc[0] == "10:22:00"
    assert first["t"].iloc[-1] - first.loc[first["sog"] <= 3, "t"].iloc[0] >= 60  # an hour of the loiter is shown
    last = _reports(render_context(seeds["loiter_end"].context, seeds["loiter_end"], inputs, "table"))
    assert last.loc[last["sog"] <= 3, "time"].iloc[-1] == "12:20:00" and last["sog"].iloc[-1] > 3
    gappy = track[~track["ts"].between("2024-01-15 11:00", "2024-01-15 11:40")]  # 40 minutes without reports
    assert loiter_candidates(_handmade_inputs(tmp_path, gappy, {"loitering": pd.DataFrame([row])}, params)) == []
