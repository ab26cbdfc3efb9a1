"""Offline template teacher: deterministic, varied, chat-format, and its planted errors are real."""

from __future__ import annotations

from tasks.config import TeacherConfig, ValidateConfig
from tasks.teacher import SYSTEM_PROMPT, TemplateTeacher, to_example
from tasks.validate import validate_example
from tests.tasks.factories import example, movement_seed, port_seed


def _seeds(n=40):
    forms = ["max_speed", "mean_speed", "distance_run"]
    return [movement_seed(forms[i % 3], mmsi=366000100 + i, hour=i % 20) for i in range(n)]


def test_chat_format_carries_context_and_question():
    ex = example(movement_seed())
    roles = [m["role"] for m in ex["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert ex["messages"][0]["content"] == SYSTEM_PROMPT
    user = ex["messages"][1]["content"]
    assert user.startswith("AIS position reports for vessel MMSI 366000001") and "\n\nQuestion: " in user
    for key in ("fact_sql", "fact_params", "source_hash", "teacher", "generation_seed", "prompt_version"):
        assert ex[key] not in (None, "")


def test_deterministic_and_varied():
    teacher = TemplateTeacher(TeacherConfig(corrupt_share=0), seed=3)
    first = [teacher.generate(s) for s in _seeds()]
    again = [TemplateTeacher(TeacherConfig(corrupt_share=0), seed=3).generate(s) for s in _seeds()]
    assert [g.to_dict() for g in first] == [g.to_dict() for g in again]
    openings = {g.question.split(" vessel")[0] for g in first}
    assert len(openings) >= 6  # several phrasings per form, not one template


def test_corrupt_share_plants_errors_the_gate_catches():
    cfg = ValidateConfig()
    clean = [to_example(s, TemplateTeacher(TeacherConfig(corrupt_share=0), 1).generate(s), 1) for s in _seeds()]
    assert all(validate_example(e, cfg).keep for e in clean)
    seeds = _seeds() + [port_seed(f, mmsi=366000900 + i) for i, f in enumerate(["arrival", "departure", "dwell"])]
    dirty = [to_example(s, TemplateTeacher(TeacherConfig(corrupt_share=1), 1).generate(s), 1) for s in seeds]
    assert all(e["planted_error"] for e in dirty)
    verdicts = [validate_example(e, cfg) for e in dirty]
    assert not any(v.keep for v in verdicts)
    assert {v.reason for v in verdicts} <= {"ungrounded_number", "ungrounded_time", "missing_required_value"}
