"""The quality gate's validators on handmade examples: plausibility (physically possible values,
anomaly answers exempt by their grounding roles), triviality, the stricter grounding of names,
counts, positions and thresholds, the switches and the per-validator funnel."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from tasks.artifacts import write_jsonl
from tasks.catalogue.anomalies import gap_candidates, implausible_speed_candidates, jump_candidates
from tasks.catalogue.base import render_context
from tasks.catalogue.identity import conflict_candidates, particulars_candidates
from tasks.config import GenerateConfig, TeacherConfig, ValidateConfig
from tasks.teacher import TemplateTeacher, to_example
from tasks.validate import (
    RunNames, check_grounding, check_plausibility, check_triviality, type_max_speeds, validate_example, validate_examples,
)
from tests.tasks.factories import catalogue_inputs, example, movement_seed, port_seed, unanswerable_seed

CFG = ValidateConfig()


def _set(seed, **values):
    """The seed with fact and grounding values replaced (so the template answer states them)."""
    fact = seed.fact | values
    grounding = [{**g, "value": values[g["name"]]} if g["name"] in values else g for g in seed.grounding]
    return replace(seed, fact=fact, grounding=grounding)


def _extra(seed, *entries):
    return replace(seed, grounding=seed.grounding + list(entries))


# ---- plausibility -------------------------------------------------------------------------------

def test_type_maxima_come_from_the_documented_table():
    limits = type_max_speeds()
    assert limits["cargo"] == 30 and limits["tanker"] == 25 and limits["tug"] == 20
    assert limits["pleasure craft"] == 50 and limits["any"] == max(limits.values())


def test_a_speed_the_vessel_type_cannot_make_is_implausible_even_when_grounded():
    fast = example(movement_seed("max_speed", maxv=45.0))  # a cargo vessel: 30 kn at most
    assert check_grounding(fast, CFG).keep
    verdict = validate_example(fast, CFG)
    assert verdict.reason == "implausible_speed" and "cargo" in verdict.detail
    # the same speed is possible for a pleasure craft, and for a vessel of unknown type
    assert validate_example(example(replace(movement_seed("max_speed", maxv=45.0), vessel_type="pleasure craft")), CFG).keep
    assert validate_example(example(replace(movement_seed("max_speed", maxv=45.0), vessel_type="unknown type")), CFG).keep
    assert validate_example(fast, ValidateConfig(plausibility=False)).keep


def test_a_distance_beyond_top_speed_times_the_window_is_implausible():
    # one hour at a cargo vessel's 30 kn, with the 1.25 margin: 37.5 nm
    assert validate_example(example(movement_seed("distance_run", dist=36.0)), CFG).keep
    assert validate_example(example(movement_seed("distance_run", dist=40.0)), CFG).reason == "implausible_distance"


@pytest.mark.parametrize("minutes, reason", [(141.5, None), (200.0, "implausible_duration"), (-5.0, "implausible_duration")])
def test_a_duration_must_fit_the_window(minutes, reason):
    seed = _set(port_seed("dwell"), dwell_minutes=minutes, dwell_hours=minutes / 60)  # window 07:32:10-10:13:40
    ex = example(seed)
    assert check_grounding(ex, CFG).keep
    assert validate_example(ex, CFG).reason == reason


def test_a_position_off_the_globe_is_implausible_even_as_reported():
    seed = _extra(movement_seed(), {"name": "lat", "value": 95.0, "kind": "lat", "required": False, "role": "reported"})
    assert check_plausibility(example(seed), CFG).reason == "implausible_position"


@pytest.fixture(scope="module")
def anomaly_examples(sim30):
    """Template examples of the forms whose answers state impossible values on purpose."""
    staged, facts, _ = sim30
    inputs = catalogue_inputs(staged, facts, GenerateConfig(max_context_records=100))
    seeds = implausible_speed_candidates(inputs) + jump_candidates(inputs) + gap_candidates(inputs) + conflict_candidates(inputs)
    teacher = TemplateTeacher(TeacherConfig(corrupt_share=0.0), 1)
    out = []
    for seed in seeds:
        seed.context = render_context(seed.context, seed, inputs, "table")
        out.append(to_example(seed, teacher.generate(seed), 1))
    return out


def test_anomaly_answers_state_impossible_values_and_their_roles_exempt_them(anomaly_examples):
    forms = {ex["form"] for ex in anomaly_examples}
    assert {"implausible_speed_peak", "jump_speed", "jump_distance"} <= forms
    exempted = set()
    for ex in anomaly_examples:
        verdict = validate_example(ex, CFG)
        assert verdict.keep, (ex["form"], verdict, ex["answer"])
        # without the roles the catalogue declares, the same values are impossible for the vessel
        bare = {**ex, "grounding": json.dumps([{k: v for k, v in g.items() if k != "role"} for g in json.loads(ex["grounding"])])}
        if not check_plausibility(bare, CFG).keep:
            exempted.add(ex["form"])
    assert {"implausible_speed_peak", "jump_speed", "jump_distance"} <= exempted, exempted


# ---- triviality ---------------------------------------------------------------------------------

def _ask(ex, question):
    ex = json.loads(json.dumps(ex))
    ex["messages"][1]["content"] = ex["messages"][1]["content"].rsplit("Question:", 1)[0] + f"Question: {question}"
    return ex


def test_a_question_that_states_the_answer_is_trivial():
    ex = example(movement_seed("mean_speed", mean=12.34))
    assert check_triviality(ex, CFG).keep
    told = _ask(ex, "Vessel 366000001 averaged 12.3 knots between 06:00 and 07:00 UTC. What was its mean speed?")
    assert check_grounding(told, CFG).keep
    verdict = validate_example(told, CFG)
    assert verdict.reason == "trivial"
    assert validate_example(told, ValidateConfig(triviality=False)).keep


def test_an_answer_written_in_the_question_is_trivial():
    ex = example(port_seed("arrival"))
    answer = ex["messages"][-1]["content"]
    assert validate_example(_ask(ex, f"Is it true that {answer}"), CFG).reason == "trivial"


def test_naming_the_options_or_the_absent_vessel_is_not_trivial(sim30):
    staged, facts, _ = sim30
    inputs = catalogue_inputs(staged, facts)
    seed = next(s for s in particulars_candidates(inputs) if s.form == "ship_type")
    seed.context = render_context(seed.context, seed, inputs, "table")
    ex = to_example(seed, TemplateTeacher(TeacherConfig(corrupt_share=0.0), 1).generate(seed), 1)
    type_name = json.loads(ex["fact"])["type_name"]
    options = _ask(ex, f"Is vessel {seed.mmsi} a {type_name} vessel, a tanker, or something else?")
    assert validate_example(options, CFG).keep
    # an unanswerable question names the vessel that is not in the records, on purpose
    assert validate_example(example(unanswerable_seed()), CFG).keep


# ---- grounding: names ----------------------------------------------------------------------------

ARRIVAL = "Vessel 366000009 ({name}) arrived at {port} ({code}) at 07:42 UTC."


@pytest.mark.parametrize("name, port, code, reason", [
    ("OCEAN 7", "Long Beach", "USLGB", None),
    ("Ocean 7", "Long Beach", "USLGB", None),
    ("SEA STAR", "Long Beach", "USLGB", "ungrounded_name"),      # another vessel's name
    ("OCEAN 8", "Long Beach", "USLGB", "ungrounded_name"),       # a mutated name
    ("OCEAN", "Long Beach", "USLGB", "ungrounded_name"),         # a name cut short
    ("OCEAN 7", "Oakland", "USLGB", "ungrounded_name"),          # another port's name on the right code
    ("OCEAN 7", "Long Baech", "USLGB", "ungrounded_name"),       # a misspelt port
    ("OCEAN 7", "Oakland", "USOAK", "ungrounded_entity"),        # another port altogether
])
def test_vessel_and_port_names_must_be_the_facts(name, port, code, reason):
    ex = example(port_seed("arrival"), answer=ARRIVAL.format(name=name, port=port, code=code))
    assert validate_example(ex, CFG).reason == reason


def test_a_name_must_belong_to_the_mmsi_beside_it():
    ex = example(port_seed("arrival"), answer="Vessel 366000009 arrived at Long Beach (USLGB) at 07:42 UTC, "
                                              "like vessel 366000009 (OCEAN 7) always does.")
    assert validate_example(ex, CFG).keep
    swapped = example(port_seed("arrival"), answer="OCEAN 7 (MMSI 366000001) arrived at Long Beach (USLGB) at 07:42 UTC.")
    assert validate_example(swapped, CFG).reason == "ungrounded_name"


def test_names_known_to_the_run_are_wrong_in_another_examples_answer():
    ex = example(port_seed("arrival"), answer="Vessel 366000009 arrived at Long Beach (USLGB) at 07:42 UTC, "
                                              "coming from Oakland.")
    assert validate_example(ex, CFG).keep  # the example alone cannot tell Oakland is a port
    assert validate_example(ex, CFG, RunNames(ports=frozenset({"Oakland"}))).reason == "ungrounded_name"


# ---- grounding: numbers -------------------------------------------------------------------------

@pytest.mark.parametrize("answer, reason", [
    ("Vessel 366000001 averaged 12.3 knots over its 24 legs.", None),
    ("Vessel 366000001 averaged 12.3 knots over 25 speed reports.", None),
    ("Vessel 366000001 averaged 12.3 knots over 24 speed reports.", "ungrounded_number"),  # 24 is the legs
    ("Vessel 366000001 averaged 12.34 knots.", None),
    ("Vessel 366000001 averaged 12.30 knots.", "ungrounded_number"),  # two decimals claim 12.295-12.305
])
def test_counts_are_bound_to_their_noun_and_numbers_to_their_precision(answer, reason):
    seed = movement_seed("mean_speed", mean=12.34, n=25)  # n_positions = n_speeds = 25, n_legs = 24
    assert validate_example(example(seed, answer=answer), CFG).reason == reason


def test_each_required_value_needs_its_own_statement():
    seed = _extra(movement_seed("mean_speed", mean=12.34),
                  {"name": "vessels_hour_0", "value": 1, "kind": "count", "required": True},
                  {"name": "vessels_hour_1", "value": 1, "kind": "count", "required": True})
    both = "Vessel 366000001 averaged 12.3 knots; 1 vessel in the first hour and 1 vessel in the second."
    assert validate_example(example(seed, answer=both), CFG).keep
    once = "Vessel 366000001 averaged 12.3 knots; 1 vessel in the first hour and 3 vessels in the second."
    assert validate_example(example(seed, answer=once), CFG).reason in ("ungrounded_number", "missing_required_value")
    assert validate_example(example(seed, answer=once.replace(" and 3 vessels in the second", "")), CFG).reason \
        == "missing_required_value"


POSITIONS = [{"name": "start_lat", "value": 33.700121, "kind": "lat", "required": False, "role": "reported"},
             {"name": "start_lon", "value": -118.2, "kind": "lon", "required": False, "role": "reported"},
             {"name": "end_lat", "value": 33.8, "kind": "lat", "required": False, "role": "reported"},
             {"name": "end_lon", "value": -118.1, "kind": "lon", "required": False, "role": "reported"}]


@pytest.mark.parametrize("where, reason", [
    ("from 33.70012, -118.20000 to 33.80000, -118.10000", None),
    ("from 33.70012° N, 118.20000° W", None),
    ("from 33.80000, -118.20000", "ungrounded_position"),   # end latitude with the start longitude
    ("from 33.70020, -118.20000", "ungrounded_number"),     # wrong in the fourth decimal
])
def test_positions_are_pairs_read_to_the_digit_written(where, reason):
    seed = _extra(movement_seed("mean_speed", mean=12.34), *POSITIONS)
    ex = example(seed, answer=f"Vessel 366000001 averaged 12.3 knots {where}.")
    assert validate_example(ex, CFG).reason == reason


CPA = [{"name": "cpa_nm", "value": 0.08, "kind": "distance_nm", "required": False},
       {"name": "cpa_limit_nm", "value": 0.5, "kind": "distance_nm", "required": False, "role": "threshold"}]


@pytest.mark.parametrize("text, reason", [
    ("the two pass 0.08 nm apart, inside the 0.5 nm close-quarters limit", None),
    ("the two pass 0.50 nm apart", "ungrounded_number"),                       # the limit stated as the CPA
    ("the two pass 0.08 nm apart, inside the 0.08 nm limit", "ungrounded_number"),  # the CPA stated as the limit
])
def test_a_threshold_and_a_computed_value_are_not_interchangeable(text, reason):
    seed = _extra(movement_seed("mean_speed", mean=12.34), *CPA)
    ex = example(seed, answer=f"Vessel 366000001 averaged 12.3 knots; {text}.")
    assert validate_example(ex, CFG).reason == reason


def test_a_number_after_a_field_name_must_be_that_field():
    seed = _extra(movement_seed("mean_speed", mean=12.34),
                  {"name": "mid", "value": 366, "kind": "count", "required": False},
                  {"name": "type_code", "value": 70, "kind": "count", "required": False})
    ok = "Vessel 366000001 (MID 366, ship type 70) averaged 12.3 knots."
    assert validate_example(example(seed, answer=ok), CFG).keep
    swapped = "Vessel 366000001 (MID 70, ship type 70) averaged 12.3 knots."
    assert validate_example(example(seed, answer=swapped), CFG).reason == "ungrounded_number"


# ---- the gate: switches and funnel --------------------------------------------------------------

def test_validate_examples_counts_each_validator_and_marks_the_checks_passed(tmp_path):
    rows = [example(movement_seed("mean_speed", mmsi=366000000 + i)) for i in range(4)]
    rows.append(example(movement_seed("mean_speed"), answer="Vessel 366000001 averaged 19.9 knots."))  # grounding
    rows.append(example(movement_seed("max_speed", maxv=45.0)))                                        # plausibility
    rows.append(_ask(example(movement_seed("mean_speed", mean=12.34)),
                     "Vessel 366000001 averaged 12.3 knots. What was its mean speed?"))                # triviality
    for i, r in enumerate(rows):
        r["id"] = f"ex{i}"
    write_jsonl(rows, tmp_path / "generated.jsonl")
    stats = validate_examples(tmp_path / "generated.jsonl", CFG, tmp_path / "kept.jsonl", tmp_path / "q.parquet")
    assert stats["validators"] == [
        {"name": "schema", "input": 7, "dropped": 0, "reasons": {}},
        {"name": "grounding", "input": 7, "dropped": 1, "reasons": {"ungrounded_number": 1}},
        {"name": "plausibility", "input": 6, "dropped": 1, "reasons": {"implausible_speed": 1}},
        {"name": "triviality", "input": 5, "dropped": 1, "reasons": {"trivial": 1}},
    ]
    assert (stats["input"], stats["kept"], stats["rejected"]) == (7, 4, 3)
    kept = [json.loads(line) for line in open(tmp_path / "kept.jsonl")]
    assert all(k["checks"] == ["schema", "grounding", "plausibility", "triviality"] for k in kept)
    quarantine = pd.read_parquet(tmp_path / "q.parquet")
    assert dict(zip(quarantine["record_id"], quarantine["reason"])) == {
        "ex4": "ungrounded_number", "ex5": "implausible_speed", "ex6": "trivial"}

    off = validate_examples(tmp_path / "generated.jsonl", ValidateConfig(plausibility=False, triviality=False),
                            tmp_path / "kept2.jsonl", tmp_path / "q2.parquet")
    assert [v["name"] for v in off["validators"]] == ["schema", "grounding"] and off["kept"] == 6
    assert all(json.loads(line)["checks"] == ["schema", "grounding"] for line in open(tmp_path / "kept2.jsonl"))
