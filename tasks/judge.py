"""Optional LLM judge: an API model scores each grounded example 1-5 against the computed values.

The judge runs on the teacher runtime (tasks/llm/runner.py): the same clients, keys from the
environment, response cache, rate limits, retries, re-asks, budget and ledger. It sees each
turn's question, the values SQL computed for that turn and the answer, never the AIS records:
the computed values are the ground truth, and the records would multiply the cost of every call.
It answers `{"score": 1-5, "reason": "..."}`; a reply that is not that JSON is re-asked like
teacher output.

Below judge.min_score -> quarantine `judge_low_score`, the judge's reason as detail. Examples the
judge could not score (retries, re-asks or budget used up) -> quarantine `judge_unavailable` by
default: with the judge on, nothing is published that it did not pass; a re-run asks again and
replays every score it already has from the cache. judge.on_unscored: keep publishes them with
judge_score null instead. Kept examples carry judge_score, judge_reason and judge_model.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.artifacts import quarantine_row, read_jsonl, write_jsonl, write_quarantine
from tasks.config import JudgeConfig, TeacherConfig
from tasks.errors import ConfigError, InputError, TeacherError
from tasks.llm.output import OutputInvalid, extract_json
from tasks.teacher import value_line

log = logging.getLogger(__name__)

JUDGE_SYSTEM_PROMPT = (
    "You grade the answers of a maritime AIS analyst assistant. Every correct value was computed by SQL "
    "over the AIS records and is listed with the question; judge the answer against those values only, "
    "never against your own knowledge. Score 1-5: 5 = states every required value as computed (with its "
    "unit, times in UTC), nothing that is not among the values, and answers the question directly and "
    "clearly; 4 = the same with minor wording flaws; 3 = the values are right but the answer is unclear, "
    "padded or partly beside the question; 2 = a required value is missing, or a claim is not supported by "
    "the values; 1 = a value is wrong, a vessel, port or time is invented, or an unanswerable question is "
    "answered with a guess instead of saying the data is insufficient. Return one JSON object and nothing "
    'else: {"score": <integer 1-5>, "reason": "<one sentence>"}.'
)
# columns the judge reads from each example
REQUIRED_COLUMNS = ("id", "messages", "grounding", "category", "answerable")


class Judgement(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    score: int = Field(..., ge=1, le=5)
    reason: str

    @field_validator("reason", mode="before")
    @classmethod
    def _reason_text(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be blank")
        return value


def parse_judgement(text: str | None) -> Judgement:
    """The judge's reply as a Judgement. Tolerates a ```json fence and prose around one JSON
    object; raises OutputInvalid(empty_text / not_json / bad_shape) with a one-line detail."""
    if text is None or not text.strip():
        raise OutputInvalid("empty_text", "the reply has no text")
    value = extract_json(text)
    if not isinstance(value, dict):
        raise OutputInvalid("bad_shape", f'expected a JSON object {{"score": ..., "reason": ...}}, got {type(value).__name__}')
    try:
        return Judgement.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise OutputInvalid("bad_shape", f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}") from None


def judge_reask_message(bad: OutputInvalid) -> str:
    return (
        f"Your reply could not be used ({bad.reason}: {bad.detail}). Answer again with only one JSON object, "
        'no prose and no code fence: {"score": <integer 1-5>, "reason": "<one sentence>"}.'
    )


def judge_messages(example: dict[str, Any]) -> list[dict[str, str]]:
    """The judge's prompt: per turn the question, the computed values and the answer (in tags)."""
    grounding = _loads(example["grounding"])
    users = [m["content"] for m in example["messages"] if m["role"] == "user"]
    answers = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
    questions = [users[0].rsplit("Question:", 1)[-1].strip()] + users[1:]
    lines = [f"Category: {example['category']}; turns: {len(answers)}.", ""]
    if not example["answerable"]:
        lines += ["This question is UNANSWERABLE on purpose: what it asks about is not in the records. The right "
                  "answer says the data is insufficient and states no value beyond the question's own.", ""]
    for turn, (question, answer) in enumerate(zip(questions, answers)):
        values = [value_line(g) for g in grounding if int(g.get("turn", 0)) == turn]
        lines += [f'<question turn="{turn + 1}">{question}</question>',
                  f"Computed values for turn {turn + 1}:", *(values or ["- (none)"]),
                  f'<answer turn="{turn + 1}">{answer}</answer>', ""]
    lines.append("Grade the answer(s) as one dialogue. Answer with the JSON object only.")
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def judge_runtime_config(cfg: JudgeConfig, teacher: TeacherConfig) -> TeacherConfig:
    """The teacher runtime settings with the judge as the only teacher and the judge's budget.
    Call it when the judge is enabled; raises ConfigError when its model has no price."""
    assert cfg.llm is not None, "JudgeConfig requires llm when enabled"
    if cfg.llm.model not in teacher.price_table():
        raise ConfigError(
            f"judge model {cfg.llm.model!r} has no price; add teacher.prices.{cfg.llm.model}: "
            "{input_per_mtok: ..., output_per_mtok: ...} (0 and 0 for a local model)"
        )
    return teacher.model_copy(update={"teachers": [cfg.llm], "budget_usd": cfg.budget_usd})


def _check_columns(examples: list[dict[str, Any]], path: Path) -> None:
    for i, ex in enumerate(examples):
        missing = [c for c in REQUIRED_COLUMNS if c not in ex]
        if missing:
            raise InputError(f"{path}: example {i + 1} has no {', '.join(missing)}; the judge reads validated examples")
    ids = Counter(ex["id"] for ex in examples)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise InputError(f"{path}: example ids repeat ({repeated[:3]}); the judge needs one id per example")


def judge_examples(
    in_path: Path, cfg: JudgeConfig, teacher: TeacherConfig, out_path: Path, quarantine_path: Path,
    cache_path: Path, ledger_path: Path, progress: bool = False,
) -> dict[str, Any]:
    """Score every example of in_path; write the kept ones to out_path and the rest to quarantine.
    Disabled: a pass-through. Raises TeacherError when the judge scored nothing and on_unscored
    is quarantine (a wrong URL, key or model must not empty the dataset quietly)."""
    examples = read_jsonl(in_path)
    if not cfg.enabled:
        write_jsonl(examples, out_path)
        write_quarantine([], quarantine_path)
        return {"enabled": False, "input": len(examples), "kept": len(examples), "dropped": 0, "reasons": {}}
    runtime = judge_runtime_config(cfg, teacher)
    spec = runtime.teachers[0]
    _check_columns(examples, Path(in_path))

    from tasks.documents import is_document
    from tasks.documents.teacher import document_judge_messages
    from tasks.llm.runner import WorkItem, run_items

    items = [WorkItem(ex["id"], spec.name,
                      document_judge_messages(ex) if is_document(ex) else judge_messages(ex), 1, ex["category"],
                      parse=parse_judgement, reask=judge_reask_message) for ex in examples]
    summary = run_items(items, runtime, Path(cache_path), Path(ledger_path), progress=progress)
    results = {r.item_id: r for r in summary.results}

    kept, rejected = [], []
    scores: Counter[int] = Counter()
    unscored: Counter[str] = Counter()
    for ex in examples:
        r = results[ex["id"]]
        if r.status == "accepted":
            judgement: Judgement = r.output
            scores[judgement.score] += 1
            judged = {**ex, "judge_score": judgement.score, "judge_reason": judgement.reason, "judge_model": r.model}
            if judgement.score >= cfg.min_score:
                kept.append(judged)
            else:
                rejected.append(quarantine_row("judge", "judge_low_score", judgement.reason, judged))
            continue
        why = f"{r.status}:{r.reason}"
        unscored[why] += 1
        if cfg.on_unscored == "keep":
            kept.append({**ex, "judge_score": None, "judge_reason": f"unscored ({why})", "judge_model": r.model})
        else:
            record = {**ex, "judge_model": r.model, "judge_raw_text": r.raw_text}
            rejected.append(quarantine_row("judge", "judge_unavailable", f"{why}: {r.detail}", record))

    write_jsonl(kept, out_path)
    write_quarantine(rejected, quarantine_path)
    stats = {
        "enabled": True, "model": spec.model, "min_score": cfg.min_score, "input": len(examples), "kept": len(kept),
        "dropped": len(rejected), "reasons": dict(sorted(Counter(r["reason"] for r in rejected).items())),
        "scores": {str(s): scores[s] for s in sorted(scores)}, "unscored": dict(sorted(unscored.items())),
        "calls": summary.calls, "cache_hits": summary.cache_hits, "input_tokens": summary.input_tokens,
        "output_tokens": summary.output_tokens, "cost_usd": round(summary.cost_usd, 6), "stopped": summary.stopped,
    }
    if unscored:
        log.warning("the judge could not score %d of %d examples (%s); %s", sum(unscored.values()), len(examples),
                    dict(unscored), "kept unjudged" if cfg.on_unscored == "keep" else "quarantined as judge_unavailable")
    if examples and not scores and cfg.on_unscored == "quarantine":
        raise TeacherError(
            f"the judge scored none of {len(examples)} examples ({dict(unscored)}); the ledger is {ledger_path}, the "
            f"examples are in {quarantine_path}. Check judge.llm base_url, key variable and model"
        )
    return stats
