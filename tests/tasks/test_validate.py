"""Grounding and schema validators: keep correct answers, reject wrong ones with a reason."""

from __future__ import annotations

import pytest

from tasks.config import ValidateConfig
from tasks.validate import validate_example
from tests.tasks.factories import example, movement_seed, port_seed, unanswerable_seed

CFG = ValidateConfig()


@pytest.mark.parametrize("form", ["max_speed", "mean_speed", "distance_run"])
def test_template_answers_are_grounded(form):
    assert validate_example(example(movement_seed(form)), CFG).keep


@pytest.mark.parametrize("form", ["arrival", "departure", "dwell"])
def test_port_answers_are_grounded(form):
    verdict = validate_example(example(port_seed(form)), CFG)
    assert verdict.keep, verdict


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("Vessel 366000001 (SEA STAR) averaged 12.9 knots from 06:00 to 07:00 UTC.", "ungrounded_number"),
        ("Vessel 366000001 (SEA STAR) averaged 12.3 knots from 06:00 to 07:40 UTC.", "ungrounded_time"),
        ("Vessel 366000001 (SEA STAR) kept moving between 06:00 and 07:00 UTC.", "missing_required_value"),
        ("Vessel 366000001 averaged 12.3 knots over 25 reports on 2024-01-16.", "ungrounded_date"),
    ],
)
def test_wrong_answers_are_rejected_with_reason(answer, reason):
    verdict = validate_example(example(movement_seed("mean_speed"), answer=answer), CFG)
    assert not verdict.keep and verdict.reason == reason


def test_tolerance_is_half_a_display_unit():
    seed = movement_seed("mean_speed", mean=12.34)
    ok = "Vessel 366000001 averaged 12.3 knots between 06:00 and 07:00 UTC."
    off = "Vessel 366000001 averaged 12.4 knots between 06:00 and 07:00 UTC."
    assert validate_example(example(seed, answer=ok), CFG).keep
    assert validate_example(example(seed, answer=off), CFG).reason == "ungrounded_number"


def test_wrong_port_is_rejected():
    ex = example(port_seed("arrival"), answer="Vessel 366000009 arrived at Oakland (USOAK) at 07:42 UTC.")
    assert validate_example(ex, CFG).reason == "ungrounded_entity"


def test_digits_in_vessel_names_are_not_numbers():
    assert validate_example(example(port_seed("dwell")), CFG).keep  # vessel "OCEAN 7"


def test_unanswerable_must_refuse_and_invent_nothing():
    seed = unanswerable_seed()
    assert validate_example(example(seed), CFG).keep
    invented = example(seed, answer="Vessel 367123999 averaged 11.2 knots between 06:00 and 07:00 UTC.")
    assert validate_example(invented, CFG).reason == "ungrounded_number"
    no_refusal = example(seed, answer="Vessel 367123999 was underway between 06:00 and 07:00 UTC.")
    assert validate_example(no_refusal, CFG).reason == "unanswerable_not_refused"


def test_an_unanswerable_question_must_ask_about_what_is_absent():
    """A refusal is only right for a question about the absent vessel: the same refusal to a
    question about the vessel in the records would teach the student to refuse answerable ones."""
    seed = unanswerable_seed(absent=367123999)
    ex = example(seed)
    ex["messages"][1]["content"] = ex["messages"][1]["content"].replace("vessel 367123999", "this vessel")
    assert validate_example(ex, CFG).reason == "unanswerable_question_off"


def test_vessel_names_match_in_any_case():
    ex = example(port_seed("dwell"))  # vessel "OCEAN 7"
    ex["messages"][-1]["content"] = "Ocean 7 " + ex["messages"][-1]["content"]
    assert validate_example(ex, CFG).keep


def test_schema_rejects_bad_turns():
    ex = example(movement_seed())
    ex["messages"] = ex["messages"][:1] + [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert validate_example(ex, CFG).reason == "schema_roles"
    ex = example(movement_seed())
    ex["messages"][1]["content"] = "  "
    assert validate_example(ex, CFG).reason == "schema_empty_turn"


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("Vessel 366000001 peaked at 13.9kn between 06:00 and 07:00 UTC.", "ungrounded_number"),   # unit glued on
        ("Vessel 366000001 peaked at 13.1 kts.", None),
        ("Vessel 366000001 peaked at 13,1 knots.", None),                                           # decimal comma
        ("Vessel 366000001 peaked at 13.1 knots, 12.3 nautical miles from port.", "ungrounded_number"),
    ],
)
def test_numbers_are_read_with_their_units(answer, reason):
    verdict = validate_example(example(movement_seed("max_speed", maxv=13.06, mean=12.3), answer=answer), CFG)
    assert verdict.reason == reason, verdict


def test_a_value_stated_in_the_wrong_unit_is_rejected():
    # dwell is 141.5 minutes: "141 hours" must not pass because 141 matches the minutes value
    ex = example(port_seed("dwell"), answer="Vessel 366000009 stayed at Long Beach (USLGB) for 142 hours (2.4 minutes).")
    assert validate_example(ex, CFG).reason == "ungrounded_number"


def test_pm_times_are_converted():
    ok = example(port_seed("arrival"), answer="Vessel 366000009 arrived at Long Beach (USLGB) at 7:42 am UTC.")
    assert validate_example(ok, CFG).keep
    pm = example(port_seed("arrival"), answer="Vessel 366000009 arrived at Long Beach (USLGB) at 7:42 PM UTC.")
    assert validate_example(pm, CFG).reason == "ungrounded_time"


def test_naming_a_nearby_port_instead_of_the_computed_one_is_rejected():
    ex = example(port_seed("arrival"), answer="Vessel 366000009 arrived at Los Angeles (USLGB) at 07:42 UTC.")
    assert validate_example(ex, CFG).reason == "ungrounded_entity"


def test_the_question_must_ask_about_the_fact():
    ex = example(movement_seed("mean_speed"))
    ex["messages"][1]["content"] = ex["messages"][1]["content"].rsplit("Question:", 1)[0] + (
        "Question: What was the mean speed of vessel 366000001 between 09:00 and 10:00 UTC?")
    assert validate_example(ex, CFG).reason == "question_off_fact"
    ex = example(movement_seed("mean_speed"))
    ex["messages"][1]["content"] = ex["messages"][1]["content"].replace("vessel 366000001", "vessel 366000777")
    assert validate_example(ex, CFG).reason == "question_off_fact"
