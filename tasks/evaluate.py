"""Benchmark the base student, the fine-tuned student and the teacher on the eval split with lm-eval.

The lm-eval task is written as a folder (YAML + JSONL + utils.py) that a user can also run by
hand. Its prompts are rendered here, once, with the student's own chat template (the same call
TRL makes when it trains), and lm-eval feeds them to the model verbatim, with its own chat
templating left off. That makes the eval prompt the training prompt by construction, for any
template and for multi-turn dialogues, and the hand-run command needs no chat flags.

The teacher is an API model: a second task over the same JSONL (`<task>_chat`) sends each item
as chat messages (system + user) through lm-eval's OpenAI-compatible or Anthropic chat model.
A dialogue's earlier turns go into that user message as a transcript (lm-eval's chat path takes
one user turn per item).

Metrics, per item (None where a metric does not apply; aggregates are means over the items it
applies to):
- exact_match, token_f1 (SQuAD F1 with numbers kept whole): every item;
- numeric_match: items whose final answer must state numbers or times: 1 when each is stated
  within the fact's tolerance for its unit (validate.unit_tolerance), each statement counted once,
  and no other number is stated that neither the reference answer nor the question states;
- correctly_refused: unanswerable items: the answer says the data is insufficient;
- false_refusal: answerable items: the answer refuses anyway (a student that refuses everything
  scores 1 on correctly_refused, and this shows it).
- citation_match (document items whose reference answer cites a section): 1 when the answer
  cites every section `[source: <file> §<id>]` the reference cites. Scored here from lm-eval's
  logged generations, beside lm-eval's own metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import EvaluateConfig, TeacherSpec, ValidateConfig
from tasks.errors import ConfigError, InputError
from tasks.llm.keys import api_key
from tasks.student import END_OF_TURN, hub_offline, is_local_model
from tasks.train import quiet_hf_output, read_conversations
from tasks.validate import REFUSAL_RE, TOLERANCE_KINDS, minute_of_day, unit_tolerance

log = logging.getLogger(__name__)

DEFAULT_TASK_NAME = "tidewright_ais"
METRICS = ("exact_match", "token_f1", "numeric_match", "correctly_refused", "false_refusal")
# scored from the logged generations, for the items that have them (document citations)
CITATION_METRIC = "citation_match"
# lower is better for these; every other metric: higher is better
LOWER_IS_BETTER = ("false_refusal",)
# Per-item keys carried into the task JSONL so scores can be broken down later.
BREAKDOWN_KEYS = ("category", "difficulty", "answerable")
BREAKDOWNS = {"per_category": "category", "per_difficulty": "difficulty"}
# as the vendors' SDKs take them (generation passes base_url to the SDKs): OpenAI's includes /v1,
# Anthropic's does not (its SDK appends /v1/messages)
DEFAULT_BASE_URL = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
# what lm-eval's chat models read the key from; set only while the teacher is scored
LM_EVAL_KEY_ENV = {"openai": "OPENAI_API_KEY", "openai_compatible": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

# utils.py beside the YAML. Self-contained (standard library only) so that `lm_eval` run by hand,
# from any environment, can import it through `!function utils.process_results`.
METRICS_SOURCE = '''\
"""Metrics of the tidewright lm-eval task (written by tasks/evaluate.py; do not edit)."""

import re
from collections import Counter

ARTICLES = {"a", "an", "the"}
# SQuAD-style tokens (lowercased words, punctuation and articles dropped), except that a number
# keeps its decimal point and a time its colon: "12.4" must not match "124".
TOKEN = re.compile(r"\\d+(?:[.:]\\d+)*|[^\\W\\d_]+")
REFUSAL = re.compile(REFUSAL_PATTERN, re.IGNORECASE)
TIME = re.compile(r"(?<![\\d.])(\\d{1,2}):(\\d{2})(?::(\\d{2}))?(?![\\d.])")
DATE = re.compile(r"\\b\\d{4}-\\d{2}-\\d{2}\\b")
# a number, with a hemisphere letter after it for positions ("118.24° W" is -118.24); a run of
# more than 12 digits is no AIS value (MMSIs have 9, IMO numbers 7) but a degenerate generation
NUMBER = re.compile(r"(?<![\\w.])(-?\\d{1,12}(?:\\.\\d+)?)(?!\\d)(?:\\s*°)?(?:\\s*([NSEW])\\b)?")


def answer_tokens(text):
    return [token for token in TOKEN.findall(text.lower()) if token not in ARTICLES]


def token_f1(prediction, reference):
    """Harmonic mean of token precision and recall (SQuAD F1), in [0, 1]."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction, reference):
    return float(prediction.strip() == reference.strip())


def stated_values(text):
    """(numbers, times as minutes of the day) written in text; dates are not numbers here."""
    times = [int(h) * 60 + int(m) + (int(s) / 60 if s else 0.0) for h, m, s in TIME.findall(text)]
    rest = DATE.sub(" ", TIME.sub(" ", text))
    numbers = [-abs(float(n)) if hemisphere in ("S", "W") else float(n) for n, hemisphere in NUMBER.findall(rest)]
    return numbers, times


def distance(kind, a, b):
    """How far apart two values are; times of the day wrap at midnight (23:59 is 1 minute from 00:00)."""
    gap = abs(a - b)
    return min(gap, 1440 - gap) if kind == "time" else gap


def numeric_match(prediction, expected, reference="", question=""):
    """1.0 when every expected number and time is stated within its tolerance (one statement per
    expected value) and every other number or time stated is one the reference answer or the
    question states too (a window, a threshold, the MMSI); 0.0 otherwise: a value missing, off, or
    made up (copying the records into the answer is no match); None when the item expects none."""
    if not expected:
        return None
    numbers, times = stated_values(prediction)
    pools = {"number": numbers, "time": times}
    for value in expected:
        pool = pools[value["kind"]]
        hit = next((i for i, s in enumerate(pool) if distance(value["kind"], s, value["value"]) <= value["tol"]), None)
        if hit is None:
            return 0.0
        pool.pop(hit)
    known_numbers, known_times = (a + b for a, b in zip(stated_values(reference), stated_values(question)))
    known = {"number": known_numbers, "time": known_times}
    for kind, pool in pools.items():
        for stated in pool:
            near_expected = any(v["kind"] == kind and distance(kind, stated, v["value"]) <= v["tol"] for v in expected)
            if not near_expected and not any(distance(kind, stated, k) <= 1e-6 * (1 + abs(k)) for k in known[kind]):
                return 0.0
    return 1.0


def refused(prediction):
    return REFUSAL.search(prediction) is not None


def process_results(doc, results):
    prediction = results[0]
    answerable = doc["answerable"] is not False
    return {
        "exact_match": exact_match(prediction, doc["answer"]),
        "token_f1": token_f1(prediction, doc["answer"]),
        "numeric_match": numeric_match(prediction, doc["expected"], doc["answer"], doc["question"]) if answerable else None,
        "correctly_refused": None if answerable else float(refused(prediction)),
        "false_refusal": float(refused(prediction)) if answerable else None,
    }


def mean_defined(items):
    """Mean over the items a metric applies to (None elsewhere); -1.0 when it applies to none."""
    values = [item for item in items if item is not None]
    return sum(values) / len(values) if values else -1.0
'''.replace("REFUSAL_PATTERN", repr(REFUSAL_RE.pattern))

METRIC_LIST_YAML = "".join(
    f"  - metric: {metric}\n    aggregation: !function utils.mean_defined\n"
    f"    higher_is_better: {'false' if metric in LOWER_IS_BETTER else 'true'}\n"
    for metric in METRICS
)

# The task body, shared by the student's task and the teacher's (chat) task.
TASK_BODY = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: generate_until
{prompt_fields}doc_to_target: answer
target_delimiter: ""
generation_kwargs:
  until: {stop}
  do_sample: false
  max_gen_toks: {max_gen_toks}
process_results: !function utils.process_results
metric_list:
{metric_list}metadata:
  version: 2.0
"""

STUDENT_HEADER = """\
# tidewright AIS QA, written by tasks/evaluate.py. `prompt` is already rendered with the
# student's chat template (exactly as in training): run WITHOUT --apply_chat_template.
#   HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm_eval --model hf \\
#     --model_args pretrained=STUDENT_DIR,peft=ADAPTER_DIR --include_path {task_dir} \\
#     --tasks {task_name} --device cpu --limit 60
"""

CHAT_HEADER = """\
# The same items for a chat API model (the teacher): system + user messages, run WITH
# --apply_chat_template. A dialogue's earlier turns are a transcript in the user message.
#   OPENAI_API_KEY=... lm_eval --model local-chat-completions \\
#     --model_args model=MODEL,base_url=BASE_URL/chat/completions --apply_chat_template \\
#     --include_path {task_dir} --tasks {task_name}_chat --limit 60
"""


def _offline_for(model: str):
    return hub_offline() if is_local_model(model) else contextlib.nullcontext()


def expected_values(example: dict[str, Any], vcfg: ValidateConfig) -> list[dict[str, Any]]:
    """The numbers and times the final answer must state, each with its unit's tolerance.

    From the example's grounding: the required entries of the last assistant turn. Times are
    minutes of the day. Unanswerable examples expect none (they are scored on refusing).
    """
    if example.get("answerable") is False:
        return []
    grounding = example.get("grounding") or []
    if isinstance(grounding, str):
        grounding = json.loads(grounding)
    last_turn = sum(m["role"] == "assistant" for m in example["messages"]) - 1
    out = []
    for g in grounding:
        if not g.get("required") or int(g.get("turn", 0)) != last_turn or g.get("value") is None:
            continue
        if g["kind"] == "time":
            out.append({"kind": "time", "value": minute_of_day(g["value"]), "tol": vcfg.minutes_tolerance + 1e-9})
        elif g["kind"] in TOLERANCE_KINDS:
            value = float(g["value"])
            out.append({"kind": "number", "value": value, "tol": unit_tolerance(g["kind"], vcfg) + 1e-9 * (1 + abs(value))})
    return out


def chat_form(messages: list[dict[str, str]]) -> tuple[str, str]:
    """(system, user) for a chat API: a dialogue's earlier turns become a transcript before the
    final question."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    turns = messages[1:] if system else messages
    *earlier, final = turns[:-1]  # drop the answer being scored
    if not earlier:
        return system, final["content"]
    said = {"user": "Question", "assistant": "Your answer"}
    transcript = "\n\n".join(f"{said.get(m['role'], m['role'])}: {m['content']}" for m in earlier)
    return system, f"{transcript}\n\nFollow-up question: {final['content']}"


def write_lm_eval_task(
    eval_jsonl: Path,
    task_dir: Path,
    task_name: str = DEFAULT_TASK_NAME,
    *,
    tokenizer_from: str,
    max_gen_toks: int = EvaluateConfig().max_gen_toks,
    validate_cfg: ValidateConfig | None = None,
) -> Path:
    """Write an lm-eval task folder (two YAMLs, JSONL, utils.py) for eval_jsonl into task_dir.

    tokenizer_from is the student (model folder or hub id) whose chat template renders each
    prompt: every turn but the final answer, plus the generation prompt. Tolerances of
    numeric_match are those of validate_cfg (default: the validator's defaults).
    """
    from transformers import AutoTokenizer

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", task_name):
        raise ConfigError(f"lm-eval task name {task_name!r} must be letters, digits and underscores")
    vcfg = validate_cfg or ValidateConfig()
    eval_jsonl = Path(eval_jsonl)
    conversations = read_conversations(eval_jsonl)
    if not conversations:
        raise InputError(f"{eval_jsonl} holds no examples; the eval split is empty")
    originals = [json.loads(line) for line in eval_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    with _offline_for(tokenizer_from):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)

    task_dir = Path(task_dir).resolve()
    task_dir.mkdir(parents=True, exist_ok=True)
    data_file = task_dir / f"{task_name}.jsonl"
    with data_file.open("w", encoding="utf-8") as out:
        for original, conversation in zip(originals, conversations, strict=True):
            messages = conversation["messages"]
            system, user = chat_form(messages)
            row = {
                "id": original.get("id"),
                "prompt": tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False),
                "system": system,
                "user": user,
                # the final question without the records: numbers it states may be repeated in an answer
                "question": messages[-2]["content"].rsplit("Question:", 1)[-1].strip(),
                "answer": messages[-1]["content"],
                "expected": expected_values(original, vcfg),
                "citations": cited_sections(messages[-1]["content"]),
                **{key: original.get(key) for key in BREAKDOWN_KEYS},
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    (task_dir / "utils.py").write_text(METRICS_SOURCE, encoding="utf-8")
    fields = {
        "task_name": task_name,
        "task_dir": task_dir,
        # JSON is valid YAML: paths and stop strings are quoted safely.
        "data_file": json.dumps(str(data_file)),
        "max_gen_toks": max_gen_toks,
        "metric_list": METRIC_LIST_YAML,
    }
    # The ChatML end of turn, and the student's own end token if it differs (lm-eval also stops at
    # the tokenizer's eos, but a hand-read YAML should say so).
    stop = json.dumps(list(dict.fromkeys([END_OF_TURN, tokenizer.eos_token or END_OF_TURN])))
    (task_dir / f"{task_name}.yaml").write_text(
        STUDENT_HEADER.format(**fields)
        + TASK_BODY.format(task=task_name, prompt_fields="doc_to_text: prompt\n", stop=stop, **fields),
        encoding="utf-8",
    )
    (task_dir / f"{task_name}_chat.yaml").write_text(
        CHAT_HEADER.format(**fields)
        + TASK_BODY.format(task=f"{task_name}_chat", prompt_fields="description: system\ndoc_to_text: user\n", stop="[]", **fields),
        encoding="utf-8",
    )
    return task_dir


def cited_sections(text: str) -> list[list[str]]:
    """[file, section id] of every `[source: <file> §<id>]` citation in text."""
    from tasks.documents.grounding import CITATION_RE

    return [[m["file"].strip(), m["section"].strip()] for m in CITATION_RE.finditer(text)]


def citation_match(prediction: str, expected: list[list[str]] | None) -> float | None:
    """1.0 when the prediction cites every section the reference cites; None when it cites none."""
    if not expected:
        return None
    cited = {tuple(c) for c in cited_sections(prediction)}
    return float(all(tuple(c) in cited for c in expected))


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means of each metric over the rows it applies to, the row count, and per metric its count."""
    out: dict[str, Any] = {metric: _mean([row[metric] for row in rows]) for metric in METRICS}
    out["n"] = len(rows)
    out["n_scored"] = {metric: sum(row[metric] is not None for row in rows) for metric in METRICS}
    if any(row.get(CITATION_METRIC) is not None for row in rows):
        out[CITATION_METRIC] = _mean([row.get(CITATION_METRIC) for row in rows])
        out["n_scored"][CITATION_METRIC] = sum(row.get(CITATION_METRIC) is not None for row in rows)
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall scores plus the same per category and per difficulty."""
    summary = scores(rows)
    for name, key in BREAKDOWNS.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(str(row[key]), []).append(row)
        summary[name] = {group: scores(members) for group, members in sorted(groups.items())}
    return summary


def teacher_key(spec: TeacherSpec) -> str:
    """The key the scored teacher needs, as generation reads it (an OpenAI-compatible server without
    auth gets a placeholder, never the user's OPENAI_API_KEY). The flow calls it before training."""
    return api_key(spec, unless="set evaluate.score_teacher: false")


@contextlib.contextmanager
def _teacher_key(spec: TeacherSpec) -> Iterator[None]:
    """The teacher's key in the variable lm-eval reads, for the duration only; restored after."""
    target = LM_EVAL_KEY_ENV[spec.kind]
    value = teacher_key(spec)
    before = os.environ.get(target)
    os.environ[target] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(target, None)
        else:
            os.environ[target] = before


def _lm_eval_model(model: str | TeacherSpec, adapter_dir: Path | None) -> tuple[str, dict[str, Any], str]:
    """(lm-eval model name, model_args, device) for the student (hf) or an API teacher."""
    if isinstance(model, TeacherSpec):
        api = "anthropic" if model.kind == "anthropic" else "openai"
        base = (model.base_url or DEFAULT_BASE_URL[api]).rstrip("/")
        endpoint = f"{base}/v1/messages" if api == "anthropic" else f"{base}/chat/completions"
        args = {"model": model.model, "base_url": endpoint, "num_concurrent": model.concurrency, "max_retries": 3,
                "tokenizer_backend": None}
        return ("anthropic-chat-completions" if api == "anthropic" else "local-chat-completions"), args, "cpu"
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    args = {"pretrained": model, "dtype": "auto" if device == "cuda" else "float32"}
    if adapter_dir is not None:
        args["peft"] = str(adapter_dir)
    return "hf", args, device


def run_lm_eval(
    cfg: EvaluateConfig,
    model: str | TeacherSpec,
    adapter_dir: Path | None,
    task_dir: Path,
    task_name: str,
    out_path: Path,
) -> dict:
    """Score a student (model = its folder or hub id, plus the LoRA adapter if given) or an API
    teacher (model = its TeacherSpec, scored on the chat task) with lm-eval.

    Writes the summary to out_path (JSON) and one line per scored item to
    <out_path stem>.predictions.jsonl beside it; returns the summary: the METRICS, n, n_scored,
    per_category and per_difficulty (the same keys per group), seconds (wall time of lm-eval)
    and generated_chars.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    teacher = isinstance(model, TeacherSpec)
    lm_task = f"{task_name}_chat" if teacher else task_name
    name, model_args, device = _lm_eval_model(model, adapter_dir)
    context = _teacher_key(model) if teacher else _offline_for(str(model))
    with context, quiet_hf_output():
        lm: Any = name
        if not teacher:
            from lm_eval.models.huggingface import HFLM

            # loaded before the clock starts: `seconds` is scoring time, the basis of the cost per query
            lm = HFLM(**model_args, device=device, batch_size=cfg.batch_size)
        started = time.perf_counter()
        output = simple_evaluate(
            model=lm,
            model_args=model_args if teacher else None,
            tasks=[lm_task],
            task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
            device=device,
            batch_size=1 if teacher else cfg.batch_size,
            limit=cfg.limit,
            gen_kwargs={"max_gen_toks": cfg.max_gen_toks, "do_sample": False},
            apply_chat_template=teacher,
            log_samples=True,
            # Means of per-item scores; bootstrapped standard errors are not needed and cost time.
            bootstrap_iters=0,
        )
        seconds = time.perf_counter() - started
    rows = []
    for sample in sorted(output["samples"][lm_task], key=lambda s: s["doc_id"]):
        doc = sample["doc"]
        rows.append(
            {
                "id": doc["id"],
                **{key: doc[key] for key in BREAKDOWN_KEYS},
                "prompt": sample["arguments"][0][0],
                "prediction": sample["filtered_resps"][0],
                "answer": doc["answer"],
                "question": doc["question"],
                "expected": doc["expected"],
                **{metric: None if sample[metric] is None else float(sample[metric]) for metric in METRICS},
            }
        )
        if doc.get("citations"):
            rows[-1][CITATION_METRIC] = citation_match(rows[-1]["prediction"], doc["citations"])
    summary = summarize(rows) | {"seconds": round(seconds, 3), "generated_chars": sum(len(r["prediction"]) for r in rows)}
    # lm-eval's own aggregate must agree with the per-item rows written below (-1: no item applies).
    reported = output["results"][lm_task]
    for metric in METRICS:
        mine = -1.0 if summary[metric] is None else summary[metric]
        if abs(reported[f"{metric},none"] - mine) > 1e-9:
            raise RuntimeError(f"lm-eval reported {metric}={reported[f'{metric},none']} but its logged samples average to {mine}")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with predictions_path(out_path).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    label = model.name if teacher else f"{model}{f' + {adapter_dir}' if adapter_dir else ''}"
    log.info("%s: %s on %d items in %.1f s", label, _brief(summary), summary["n"], seconds)
    return summary


def _brief(summary: dict[str, Any]) -> str:
    return ", ".join(f"{m} {summary[m]:.3f}" for m in METRICS if summary.get(m) is not None)


def predictions_path(out_path: Path) -> Path:
    """Where run_lm_eval writes the per-item predictions for scores written to out_path."""
    return out_path.with_name(f"{out_path.stem}.predictions.jsonl")


def delta(tuned: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    metrics = list(METRICS) + ([CITATION_METRIC] if CITATION_METRIC in base and CITATION_METRIC in tuned else [])
    return {m: None if tuned[m] is None or base[m] is None else tuned[m] - base[m] for m in metrics}


def prepare_task(cfg: EvaluateConfig, base_model: str, eval_jsonl: Path, eval_dir: Path, validate_cfg: ValidateConfig) -> Path:
    """A fresh task folder eval_dir/lm_eval_task for eval_jsonl (a stale one must not mix in)."""
    task_dir = Path(eval_dir) / "lm_eval_task"
    if task_dir.exists():
        shutil.rmtree(task_dir)
    return write_lm_eval_task(
        eval_jsonl, task_dir, DEFAULT_TASK_NAME, tokenizer_from=base_model, max_gen_toks=cfg.max_gen_toks,
        validate_cfg=validate_cfg,
    )


def compare_models(
    cfg: EvaluateConfig,
    base_model: str,
    adapter_dir: Path,
    eval_jsonl: Path,
    eval_dir: Path,
    *,
    teacher: TeacherSpec | None = None,
    teacher_note: str | None = None,
    validate_cfg: ValidateConfig | None = None,
    base_scores: dict[str, Any] | None = None,
) -> dict:
    """Score base student, base + adapter, and the teacher (if given) on the same items; write
    eval_dir/results.json and return it.

    Layout: eval_dir/lm_eval_task/ (the task), base.json / tuned.json / teacher.json (scores),
    <side>.predictions.jsonl (per item), results.json (all sides, deltas). base_scores: the base
    student's scores on this very task from an earlier step (the gate), reused, not recomputed.
    teacher_note says why no teacher was scored when teacher is None.
    """
    eval_dir = Path(eval_dir)
    vcfg = validate_cfg or ValidateConfig()
    task_dir = eval_dir / "lm_eval_task"
    if base_scores is None or not task_dir.exists():
        prepare_task(cfg, base_model, eval_jsonl, eval_dir, vcfg)
        base_scores = run_lm_eval(cfg, base_model, None, task_dir, DEFAULT_TASK_NAME, eval_dir / "base.json")
    tuned = run_lm_eval(cfg, base_model, Path(adapter_dir), task_dir, DEFAULT_TASK_NAME, eval_dir / "tuned.json")
    results: dict[str, Any] = {
        "task": DEFAULT_TASK_NAME,
        "limit": cfg.limit,
        "metrics": list(METRICS) + ([CITATION_METRIC] if CITATION_METRIC in base_scores else []),
        "base": base_scores,
        "tuned": tuned,
        "delta": delta(tuned, base_scores),
    }
    if teacher is not None:
        results["teacher"] = run_lm_eval(cfg, teacher, None, task_dir, DEFAULT_TASK_NAME, eval_dir / "teacher.json")
        results["teacher"]["name"], results["teacher"]["model"] = teacher.name, teacher.model
    else:
        results["teacher_note"] = teacher_note or "no teacher scored"
    (eval_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def gate_verdict(base: dict[str, Any], tuned: dict[str, Any], metric: str, margin: float) -> dict[str, Any]:
    """Did the tuned student beat the base by margin on metric (higher is better), overall; which
    categories did not."""
    def gain(t: dict[str, Any], b: dict[str, Any]) -> float | None:
        return None if t[metric] is None or b[metric] is None else t[metric] - b[metric]

    overall = gain(tuned, base)
    per_category = {cat: gain(tuned["per_category"][cat], base["per_category"][cat]) for cat in base["per_category"]}
    failed = sorted(cat for cat, g in per_category.items() if g is not None and g < margin)
    return {
        "metric": metric,
        "margin": margin,
        "base": base[metric],
        "tuned": tuned[metric],
        "gain": overall,
        "passed": overall is not None and overall >= margin,
        "gain_per_category": per_category,
        "failed_categories": failed,
    }


def _tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)


def cost_report(
    results: dict[str, Any],
    eval_dir: Path,
    base_model: str,
    ledger_lines: list[dict[str, Any]],
    prices: dict[str, Any],
    cfg: EvaluateConfig,
    device: str,
) -> dict[str, Any]:
    """Teacher vs student cost per 1,000 queries, and their ratio.

    Teacher: the mean cost of one answered call in the run's token ledger (prices from
    teacher.prices); a run without API calls (the offline template teacher) prices
    evaluate.reference_model on the eval prompts' and reference answers' token counts (counted with
    the student's tokenizer, which is said in the result). Student: the tuned model's measured
    scoring time per eval query on this machine (lm-eval's generation, model loading excluded),
    priced at evaluate.student_price_per_hour.
    """
    from transformers import AutoTokenizer

    tuned = results["tuned"]
    seconds_per_query = tuned["seconds"] / max(tuned["n"], 1)
    student_per_1k = 1000 * seconds_per_query * cfg.student_price_per_hour / 3600
    answered = [line for line in ledger_lines if line.get("outcome") == "ok"]
    if answered:
        teacher_per_1k = 1000 * sum(float(line["cost_usd"]) for line in answered) / len(answered)
        models = sorted({str(line.get("model")) for line in answered})
        teacher_basis = (
            f"token ledger: {len(answered)} answered calls of {', '.join(models)}, mean "
            f"{sum(int(line['input_tokens']) for line in answered) / len(answered):.0f} input and "
            f"{sum(int(line['output_tokens']) for line in answered) / len(answered):.0f} output tokens"
        )
    else:
        rows = [json.loads(line) for line in predictions_path(Path(eval_dir) / "tuned.json").read_text().splitlines()]
        with _offline_for(base_model):
            tokenizer = AutoTokenizer.from_pretrained(base_model)
        tokens_in = _tokens(tokenizer, [row["prompt"] for row in rows]) / len(rows)
        tokens_out = _tokens(tokenizer, [row["answer"] for row in rows]) / len(rows)
        price = prices[cfg.reference_model]
        teacher_per_1k = 1000 * (tokens_in * price.input_per_mtok + tokens_out * price.output_per_mtok) / 1e6
        teacher_basis = (
            f"no API teacher calls in this run: {cfg.reference_model} list prices on the eval prompts "
            f"({tokens_in:.0f} input, {tokens_out:.0f} output tokens per query, counted with the student's tokenizer)"
        )
    ratio = teacher_per_1k / student_per_1k if student_per_1k > 0 else math.inf
    return {
        "teacher_usd_per_1k": round(teacher_per_1k, 6),
        "teacher_basis": teacher_basis,
        "student_usd_per_1k": round(student_per_1k, 6),
        "student_basis": (
            f"tuned student measured at {seconds_per_query:.3f} s per query (lm-eval scoring, batch {cfg.batch_size}, "
            f"{device}) at {cfg.student_price_per_hour:.2f} USD/h"
        ),
        "ratio": None if math.isinf(ratio) else round(ratio, 1),
    }


evaluate_task = task(name="evaluate-lm-eval")(compare_models)
