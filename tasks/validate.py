"""Validators: each example gets keep/drop with a machine-readable reason; nothing is dropped silently.

Grounding rule: every number, time, MMSI and port code in the assistant's answer must equal a
computed value of the example's fact within the tolerance for its unit, and every required value
must be stated. An unanswerable question's answer must say the data is insufficient and state no
value beyond the identifiers and window it was asked about.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from tasks.config import ValidateConfig
from tasks.teacher import read_examples

ROLES = ("system", "user", "assistant")
TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?\b")
DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
LOCODE_RE = re.compile(r"\b[A-Z]{2}[A-Z2-9]{3}\b")
NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
REFUSAL_RE = re.compile(
    r"insufficient|cannot be determined|cannot answer|no (?:ais )?(?:records|reports)|not in the data|not present",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str | None = None
    detail: str | None = None


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
    }[kind]


def check_grounding(example: dict[str, Any], cfg: ValidateConfig) -> Verdict:
    answer = example["messages"][-1]["content"]
    grounding = json.loads(example["grounding"]) if isinstance(example["grounding"], str) else example["grounding"]
    fact = json.loads(example["fact"]) if isinstance(example["fact"], str) else example["fact"]
    text = answer
    # names can hold digits ("EAGLE 2"): take the known ones out before reading numbers
    for name in (example.get("vessel_name"), fact.get("port_name")):
        if isinstance(name, str) and name:
            text = text.replace(name, " ")

    times = [(int(h) * 60 + int(m) + (int(s) / 60 if s else 0)) for h, m, s in TIME_RE.findall(text)]
    text = TIME_RE.sub(" ", text)
    dates = DATE_RE.findall(text)
    text = DATE_RE.sub(" ", text)
    codes = LOCODE_RE.findall(text)
    numbers = [float(n) for n in NUMBER_RE.findall(text)]

    allowed_times = [_minute_of_day(g["value"]) for g in grounding if g["kind"] == "time"]
    allowed_days = {str(g["value"])[:10] for g in grounding if g["kind"] == "time"}
    allowed_codes = {g["value"] for g in grounding if g["kind"] == "entity"}
    numeric = [g for g in grounding if g["kind"] not in ("time", "entity")]

    def time_ok(t: float, ref: float) -> bool:
        diff = abs(t - ref) % 1440
        return min(diff, 1440 - diff) <= cfg.minutes_tolerance

    def number_ok(n: float, g: dict[str, Any]) -> bool:
        return abs(n - float(g["value"])) <= _tolerance(g["kind"], cfg) + 1e-9

    for t in times:
        if not any(time_ok(t, ref) for ref in allowed_times):
            return Verdict(False, "ungrounded_time", f"{int(t) // 60:02d}:{int(t) % 60:02d} matches no computed time")
    for d in dates:
        if d not in allowed_days:
            return Verdict(False, "ungrounded_date", d)
    for c in codes:
        if c not in allowed_codes:
            return Verdict(False, "ungrounded_entity", f"{c} is not the computed port")
    for n in numbers:
        if not any(number_ok(n, g) for g in numeric):
            return Verdict(False, "ungrounded_number", f"{n:g} matches no computed value")

    if not example.get("answerable", True):
        if not REFUSAL_RE.search(answer):
            return Verdict(False, "unanswerable_not_refused", "answer to an unanswerable question does not say the data is insufficient")

    for g in grounding:
        if not g.get("required"):
            continue
        kind = g["kind"]
        if kind == "time":
            stated = any(time_ok(t, _minute_of_day(g["value"])) for t in times)
        elif kind == "entity":
            stated = g["value"] in codes
        else:
            stated = any(number_ok(n, g) for n in numbers)
        if not stated:
            return Verdict(False, "missing_required_value", f"answer does not state {g['name']}")
    return Verdict(True)


def validate_example(example: dict[str, Any], cfg: ValidateConfig) -> Verdict:
    verdict = check_schema(example)
    if not verdict.keep:
        return verdict
    return check_grounding(example, cfg)


def quarantine_row(stage: str, reason: str, detail: str | None, example: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "reason": reason,
        "record_id": example.get("id"),
        "mmsi": str(example.get("mmsi")),
        "payload": json.dumps({**example, "rejection_detail": detail}, default=str),
    }


def validate_examples(generated_path: Path, cfg: ValidateConfig, kept_path: Path, quarantine_path: Path) -> dict[str, Any]:
    examples = read_examples(generated_path)
    kept, rejected = [], []
    for ex in examples:
        verdict = validate_example(ex, cfg)
        if verdict.keep:
            kept.append(ex)
        else:
            rejected.append(quarantine_row("validate", verdict.reason, verdict.detail, ex))
    write_jsonl(kept, kept_path)
    write_parquet(rejected, quarantine_path, QUARANTINE_SCHEMA)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    planted = sum(1 for ex in examples if ex.get("planted_error"))
    planted_caught = sum(1 for r in rejected if json.loads(r["payload"]).get("planted_error"))
    return {"input": len(examples), "kept": len(kept), "rejected": len(rejected), "reasons": reasons,
            "planted_errors": planted, "planted_errors_caught": planted_caught}


QUARANTINE_SCHEMA = ("stage", "reason", "record_id", "mmsi", "payload")


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")
    tmp.replace(path)


def write_parquet(rows: list[dict[str, Any]], path: Path, columns: tuple[str, ...]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(columns)).astype({c: "string" for c in columns})
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


validate_task = task(name="validate-grounding")(validate_examples)
