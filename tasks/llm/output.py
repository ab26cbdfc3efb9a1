"""The teacher's structured output: the JSON a teacher must return, and a parser that says why not.

A teacher answers with one JSON object `{"turns": [{"question", "reasoning", "answer"}, ...]}`.
Real models wrap it in a ```json fence or a sentence of prose, so `parse_output` looks for ONE
JSON object inside the text; anything else raises `OutputInvalid(reason, detail)`, and the
runner re-asks with that reason or quarantines the raw text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# reasons a text is not a usable answer (machine-readable; the quarantine counts by them)
OUTPUT_REASONS = ("empty_text", "not_json", "bad_shape", "wrong_turn_count")

_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)```", re.DOTALL)


class OutputInvalid(Exception):
    """The teacher's text is not the JSON asked for; `reason` is one of OUTPUT_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Turn(BaseModel):
    # numbers are accepted as text (a model may write "answer": 12.5); unknown keys are ignored
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    question: str
    reasoning: str = ""
    answer: str

    @field_validator("reasoning", mode="before")
    @classmethod
    def _no_reasoning(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("question", "reasoning", "answer")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be blank")
        return value


class TeacherOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    turns: list[Turn] = Field(..., min_length=1)


def _json_objects(text: str) -> list[Any]:
    """Every top-level JSON object embedded in `text` (prose around them is skipped)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = text.find("{")
    while pos != -1:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        found.append(value)
        pos = text.find("{", end)
    return found


def extract_json(text: str) -> Any:
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    fence = _FENCE_RE.search(stripped)
    candidate = fence.group(1).strip() if fence else stripped
    if fence:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    objects = _json_objects(candidate)
    if len(objects) == 1:
        return objects[0]
    if not objects:
        raise OutputInvalid("not_json", f"no JSON object in the text (starts {stripped[:60]!r})")
    raise OutputInvalid("not_json", f"{len(objects)} JSON objects in the text; answer with exactly one")


def _as_turns(value: Any) -> Any:
    # unambiguous near-misses are accepted as they are: a bare list of turns, or one bare turn
    if isinstance(value, list):
        return {"turns": value}
    if isinstance(value, dict) and "turns" not in value and "question" in value and "answer" in value:
        return {"turns": [value]}
    return value


def _shape_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


def parse_output(text: str | None, expected_turns: int) -> TeacherOutput:
    """The teacher's answer as a TeacherOutput with exactly `expected_turns` turns.

    Tolerates a ```json fence and prose around one JSON object. Raises OutputInvalid with reason
    empty_text / not_json / bad_shape / wrong_turn_count and a one-line detail.
    """
    if text is None or not text.strip():
        raise OutputInvalid("empty_text", "the reply has no text")
    value = _as_turns(extract_json(text))
    if not isinstance(value, dict):
        raise OutputInvalid("bad_shape", f'expected a JSON object {{"turns": [...]}}, got {type(value).__name__}')
    try:
        output = TeacherOutput.model_validate(value)
    except ValidationError as exc:
        raise OutputInvalid("bad_shape", _shape_errors(exc)) from None
    if len(output.turns) != expected_turns:
        raise OutputInvalid("wrong_turn_count", f"expected {expected_turns} turn(s), got {len(output.turns)}")
    return output
