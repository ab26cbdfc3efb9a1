"""Validators: each example gets keep/drop with a machine-readable reason; nothing is dropped silently.

Grounding rule: every number, time, date, MMSI and port in the assistant's turns must equal a
computed value of the example's fact within the tolerance for its unit (a number followed by a
unit word is only compared with values of that unit), and every required value must be stated.
The question may only name the vessel and window the fact is about. An unanswerable question's
answer must say the data is insufficient and state no value beyond the identifiers and window.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from tasks.artifacts import quarantine_row, read_jsonl, write_jsonl, write_quarantine
from tasks.config import ValidateConfig

TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?:\s*([ap])\.?\s?m\b\.?)?", re.IGNORECASE)
DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
LOCODE_RE = re.compile(r"\b[A-Z]{2}[A-Z2-9]{3}\b")
MMSI_RE = re.compile(r"(?<![\d.])\d{9}(?![\d.])")
# a number (thousands "1,234", decimal point or decimal comma) and the unit word after it, if any
NUMBER_RE = re.compile(
    r"(?<![\w.,])(?P<num>-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:[.,]\d+)?)(?![\d])"
    r"\s*(?P<unit>knots?|kts?|kn|nautical\s+miles?|nmi|nm|minutes?|mins?|hours?|hrs?|h|"
    r"(?:speed\s+|position\s+)?reports?|legs?|positions?|degrees?|deg|°|vessels?|ships?|pairs?|encounters?|"
    r"days?|metres?|meters?|m|(?:major\s+)?course\s+changes?|turns?|alterations?)?(?![a-z])",
    re.IGNORECASE,
)
UNIT_KINDS = {
    "kn": "speed_kn", "kt": "speed_kn", "knot": "speed_kn",
    "nm": "distance_nm", "nmi": "distance_nm", "nautical": "distance_nm",
    "min": "minutes", "minute": "minutes",
    "h": "hours", "hr": "hours", "hour": "hours",
    "report": "count", "speed": "count", "position": "count", "leg": "count",
    "vessel": "count", "ship": "count", "pair": "count", "encounter": "count", "day": "count",
    "course": "count", "major": "count", "turn": "count", "alteration": "count",
    "degree": "degrees", "deg": "degrees", "°": "degrees",
    "metre": "metres", "meter": "metres", "m": "metres",
}
REFUSAL_RE = re.compile(
    r"insufficient|cannot be determined|cannot answer|no (?:ais )?(?:records|reports)|not in the data|not present",
    re.IGNORECASE,
)
TOLERANCE_KINDS = ("speed_kn", "distance_nm", "minutes", "hours", "count", "id", "degrees", "metres", "number")


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Claims:
    """What a text states: times (minute of day), dates, port codes, numbers with their unit kind."""

    times: list[float]
    dates: list[str]
    codes: list[str]
    numbers: list[tuple[float, str | None]]


def check_schema(example: dict[str, Any]) -> Verdict:
    messages = example.get("messages")
    if not isinstance(messages, list) or len(messages) < 3:
        return Verdict(False, "schema_messages", "messages must be a list of system, user, assistant turns")
    roles = tuple(m.get("role") for m in messages if isinstance(m, dict))
    if len(roles) != len(messages) or roles[0] != "system" or roles[-1] != "assistant":
        return Verdict(False, "schema_roles", f"roles {roles}")
    for a, b in zip(roles[1:], roles[2:]):
        if a == b:
            return Verdict(False, "schema_roles", f"two {a} turns in a row")
    for m in messages:
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return Verdict(False, "schema_empty_turn", f"empty {m.get('role')} turn")
    return Verdict(True)


def _unit_kind(unit: str | None) -> str | None:
    if not unit:
        return None
    word = re.split(r"\s+", unit.lower())[0]
    word = word[:-1] if word.endswith("s") and word not in ("s",) else word
    return UNIT_KINDS.get(word)


def _number(text: str) -> float:
    if "," in text and "." not in text and not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+", text):
        return float(text.replace(",", "."))  # decimal comma: 12,3
    return float(text.replace(",", ""))


def extract_claims(text: str, names: list[str]) -> Claims:
    # names can hold digits ("EAGLE 2"): take the known ones out before reading numbers
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", " ", text, flags=re.IGNORECASE)
    times = []
    for h, m, s, ampm in TIME_RE.findall(text):
        hour = int(h)
        if ampm:
            hour = hour % 12 + (12 if ampm.lower() == "p" else 0)
        times.append(hour * 60 + int(m) + (int(s) / 60 if s else 0))
    text = TIME_RE.sub(" ", text)
    dates = DATE_RE.findall(text)
    text = DATE_RE.sub(" ", text)
    codes = LOCODE_RE.findall(text)
    numbers = [(_number(m["num"]), _unit_kind(m["unit"])) for m in NUMBER_RE.finditer(text)]
    return Claims(times, dates, codes, numbers)


def _minute_of_day(iso: str) -> float:
    ts = pd.Timestamp(iso)
    return ts.hour * 60 + ts.minute + ts.second / 60


def _tolerance(kind: str, cfg: ValidateConfig) -> float:
    return {
        "speed_kn": cfg.speed_tolerance_kn,
        "distance_nm": cfg.distance_tolerance_nm,
        "minutes": cfg.minutes_tolerance,
        "hours": 0.051,  # written with 1 decimal
        "count": 0.0,
        "id": 0.0,
        "degrees": 1.0,   # courses and bearings are written to the degree
        "metres": 0.51,   # dimensions are written to the metre
        "number": 0.051,  # any other value written with 1 decimal
    }[kind]


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def check_grounding(example: dict[str, Any], cfg: ValidateConfig) -> Verdict:
    grounding = _loads(example["grounding"])
    fact = _loads(example["fact"])
    facts = fact if isinstance(fact, list) else [fact]
    names = [n for n in [example.get("vessel_name")] + [f.get("port_name") for f in facts] if isinstance(n, str)]
    names += [g["value"] for g in grounding if g["kind"] in ("name", "label") and isinstance(g["value"], str)]
    allowed_times = [_minute_of_day(g["value"]) for g in grounding if g["kind"] == "time"]
    allowed_days = {str(g["value"])[:10] for g in grounding if g["kind"] in ("time", "date")}
    allowed_codes = {g["value"] for g in grounding if g["kind"] == "entity"}
    distractors = [g["value"] for g in grounding if g["kind"] == "distractor"]
    numeric = [g for g in grounding if g["kind"] in TOLERANCE_KINDS]

    def time_ok(t: float, ref: float) -> bool:
        diff = abs(t - ref) % 1440
        return min(diff, 1440 - diff) <= cfg.minutes_tolerance

    def number_ok(n: float, unit: str | None, g: dict[str, Any]) -> bool:
        if unit is not None and g["kind"] != unit:
            return False
        return abs(n - float(g["value"])) <= _tolerance(g["kind"], cfg) + 1e-9

    # the questions may only name the window and the vessels the fact is about
    user_turns = [m["content"] for m in example["messages"] if m["role"] == "user"]
    questions = [user_turns[0].rsplit("Question:", 1)[-1]] + user_turns[1:]
    asked = {int(g["value"]) for g in grounding if g["kind"] == "id"}
    if not example.get("answerable", True):
        asked = {int(g["value"]) for g in grounding if g["name"] == "asked_mmsi"}
    for question in questions:
        q = extract_claims(question, names)
        for t in q.times:
            if not any(time_ok(t, ref) for ref in allowed_times):
                return Verdict(False, "question_off_fact", "the question names a time outside the fact's window")
        for mmsi in MMSI_RE.findall(question):
            if int(mmsi) not in asked:
                return Verdict(False, "question_off_fact", f"the question names vessel {mmsi}, not the fact's")

    if not example.get("answerable", True):
        # the question must ask about the absent vessel, day or port: a refusal to a question the
        # records do answer would teach the student to refuse answerable questions
        first = questions[0]
        for g in grounding:
            if g["name"] == "asked_mmsi" and g.get("required") and str(g["value"]) not in first:
                return Verdict(False, "unanswerable_question_off", f"the question does not name vessel {g['value']}")
            if g["name"] == "asked_day" and str(g["value"]) not in first:
                return Verdict(False, "unanswerable_question_off", f"the question does not name {g['value']}")
            if g["name"] == "asked_port" and str(g["value"]) not in first:
                return Verdict(False, "unanswerable_question_off", f"the question does not name port {g['value']}")

    assistant_turns = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
    claims = []
    for turn in assistant_turns:
        for d in distractors:
            if re.search(rf"(?<!\w){re.escape(d)}(?!\w)", turn, re.IGNORECASE) and not any(d in n for n in names):
                return Verdict(False, "ungrounded_entity", f"names {d}, which is not the computed value")
        c = extract_claims(turn, names)
        claims.append(c)
        for t in c.times:
            if not any(time_ok(t, ref) for ref in allowed_times):
                return Verdict(False, "ungrounded_time", f"{int(t) // 60:02d}:{int(t) % 60:02d} matches no computed time")
        for d in c.dates:
            if d not in allowed_days:
                return Verdict(False, "ungrounded_date", d)
        for code in c.codes:
            if code not in allowed_codes:
                return Verdict(False, "ungrounded_entity", f"{code} is not a computed port")
        for n, unit in c.numbers:
            if not any(number_ok(n, unit, g) for g in numeric):
                return Verdict(False, "ungrounded_number", f"{n:g}{' ' + unit if unit else ''} matches no computed value")

    if not example.get("answerable", True) and not REFUSAL_RE.search(assistant_turns[-1]):
        return Verdict(False, "unanswerable_not_refused", "answer to an unanswerable question does not say the data is insufficient")

    for g in grounding:
        if not g.get("required"):
            continue
        turn = int(g.get("turn", 0))
        if turn >= len(assistant_turns):
            return Verdict(False, "missing_turn", f"the dialogue has no answer for turn {turn + 1}")
        final, text = claims[turn], assistant_turns[turn]
        if g["kind"] == "time":
            stated = any(time_ok(t, _minute_of_day(g["value"])) for t in final.times)
        elif g["kind"] == "entity":
            stated = g["value"] in final.codes
        elif g["kind"] == "date":
            stated = str(g["value"])[:10] in text
        elif g["kind"] in ("label", "name"):
            stated = re.search(rf"(?<!\w){re.escape(str(g['value']))}(?!\w)", text, re.IGNORECASE) is not None
        else:
            stated = any(number_ok(n, unit, g) for n, unit in final.numbers)
        if not stated:
            where = f" (turn {turn + 1})" if len(assistant_turns) > 1 else ""
            return Verdict(False, "missing_required_value", f"answer does not state {g['name']}{where}")
    return Verdict(True)


def validate_example(example: dict[str, Any], cfg: ValidateConfig) -> Verdict:
    verdict = check_schema(example)
    if not verdict.keep:
        return verdict
    return check_grounding(example, cfg)


def validate_examples(generated_path: Path, cfg: ValidateConfig, kept_path: Path, quarantine_path: Path) -> dict[str, Any]:
    examples = read_jsonl(generated_path)
    kept, rejected = [], []
    for ex in examples:
        verdict = validate_example(ex, cfg)
        if verdict.keep:
            kept.append(ex)
        else:
            rejected.append(quarantine_row("validate", verdict.reason, verdict.detail, ex))
    write_jsonl(kept, kept_path)
    write_quarantine(rejected, quarantine_path)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    planted = sum(1 for ex in examples if ex.get("planted_error"))
    planted_caught = sum(1 for r in rejected if json.loads(r["payload"]).get("planted_error"))
    return {"input": len(examples), "kept": len(kept), "rejected": len(rejected), "reasons": dict(sorted(reasons.items())),
            "planted_errors": planted, "planted_errors_caught": planted_caught}


validate_task = task(name="validate-grounding")(validate_examples)
