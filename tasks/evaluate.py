"""Benchmark the base and the fine-tuned student on the eval split with lm-eval.

The lm-eval task is written as a folder (YAML + JSONL + utils.py) that a user can also run by
hand. Its prompts are rendered here, once, with the student's own chat template (the same call
TRL makes when it trains), and lm-eval feeds them to the model verbatim, with its own chat
templating left off. That makes the eval prompt the training prompt by construction, for any
template and for multi-turn dialogues, and the hand-run command needs no chat flags.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import EvaluateConfig
from tasks.errors import ConfigError, InputError
from tasks.student import END_OF_TURN, hub_offline, is_local_model
from tasks.train import quiet_hf_output, read_conversations

log = logging.getLogger(__name__)

DEFAULT_TASK_NAME = "tidewright_ais"
METRICS = ("exact_match", "token_f1")
# Per-item keys carried into the task JSONL so scores can be broken down later.
BREAKDOWN_KEYS = ("category", "difficulty", "answerable")

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


def process_results(doc, results):
    prediction = results[0]
    return {
        "exact_match": exact_match(prediction, doc["answer"]),
        "token_f1": token_f1(prediction, doc["answer"]),
    }
'''

TASK_YAML = """\
# tidewright AIS QA, written by tasks/evaluate.py. `prompt` is already rendered with the
# student's chat template (exactly as in training): run WITHOUT --apply_chat_template.
#   HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm_eval --model hf \\
#     --model_args pretrained=STUDENT_DIR,peft=ADAPTER_DIR --include_path {task_dir} \\
#     --tasks {task_name} --device cpu --limit 60
task: {task_name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: generate_until
doc_to_text: prompt
doc_to_target: answer
target_delimiter: ""
generation_kwargs:
  until: {stop}
  do_sample: false
  max_gen_toks: {max_gen_toks}
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
  - metric: token_f1
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def _offline_for(model: str):
    return hub_offline() if is_local_model(model) else contextlib.nullcontext()


def write_lm_eval_task(
    eval_jsonl: Path,
    task_dir: Path,
    task_name: str = DEFAULT_TASK_NAME,
    *,
    tokenizer_from: str,
    max_gen_toks: int = EvaluateConfig().max_gen_toks,
) -> Path:
    """Write an lm-eval task folder (YAML, JSONL, utils.py) for eval_jsonl into task_dir; return task_dir.

    tokenizer_from is the student (model folder or hub id) whose chat template renders each
    prompt: every turn but the final answer, plus the generation prompt.
    """
    from transformers import AutoTokenizer

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", task_name):
        raise ConfigError(f"lm-eval task name {task_name!r} must be letters, digits and underscores")
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
            row = {
                "id": original.get("id"),
                "prompt": tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False),
                "answer": messages[-1]["content"],
                **{key: original.get(key) for key in BREAKDOWN_KEYS},
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    (task_dir / "utils.py").write_text(METRICS_SOURCE, encoding="utf-8")
    (task_dir / f"{task_name}.yaml").write_text(
        TASK_YAML.format(
            task_name=task_name,
            task_dir=task_dir,
            # JSON is valid YAML: paths and stop strings are quoted safely.
            data_file=json.dumps(str(data_file)),
            # The ChatML end of turn, and the student's own end token if it differs (lm-eval also
            # stops at the tokenizer's eos, but a hand-read YAML should say so).
            stop=json.dumps(list(dict.fromkeys([END_OF_TURN, tokenizer.eos_token or END_OF_TURN]))),
            max_gen_toks=max_gen_toks,
        ),
        encoding="utf-8",
    )
    return task_dir


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {metric: _mean([row[metric] for row in rows]) for metric in METRICS} | {"n": len(rows)}


def run_lm_eval(
    cfg: EvaluateConfig, base_model: str, adapter_dir: Path | None, task_dir: Path, task_name: str, out_path: Path
) -> dict:
    """Score base_model (plus the LoRA adapter, if given) on the task with lm-eval's HF backend.

    Writes the scores to out_path (JSON) and one line per scored item to
    <out_path stem>.predictions.jsonl beside it; returns
    {"exact_match", "token_f1", "n", "per_category": {category: {"exact_match", "token_f1", "n"}}}.
    """
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_args: dict[str, Any] = {"pretrained": base_model, "dtype": "auto" if device == "cuda" else "float32"}
    if adapter_dir is not None:
        model_args["peft"] = str(adapter_dir)
    with _offline_for(base_model), quiet_hf_output():
        output = simple_evaluate(
            model="hf",
            model_args=model_args,
            tasks=[task_name],
            task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
            device=device,
            batch_size=cfg.batch_size,
            limit=cfg.limit,
            gen_kwargs={"max_gen_toks": cfg.max_gen_toks, "do_sample": False},
            log_samples=True,
            # Means of per-item scores; bootstrapped standard errors are not needed and cost time.
            bootstrap_iters=0,
        )
    rows = []
    for sample in sorted(output["samples"][task_name], key=lambda s: s["doc_id"]):
        doc = sample["doc"]
        rows.append(
            {
                "id": doc["id"],
                **{key: doc[key] for key in BREAKDOWN_KEYS},
                "prompt": sample["arguments"][0][0],
                "prediction": sample["filtered_resps"][0],
                "answer": doc["answer"],
                **{metric: float(sample[metric]) for metric in METRICS},
            }
        )
    by_category: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_category.setdefault(str(row["category"]), []).append(row)
    summary = _scores(rows) | {"per_category": {cat: _scores(group) for cat, group in sorted(by_category.items())}}
    # lm-eval's own aggregate must agree with the per-item rows written below.
    reported = output["results"][task_name]
    if any(abs(reported[f"{metric},none"] - summary[metric]) > 1e-9 for metric in METRICS):
        raise RuntimeError(f"lm-eval reported {reported} but its logged samples average to {summary}")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with predictions_path(out_path).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info(
        "%s%s: exact_match %.3f, token_f1 %.3f on %d items",
        base_model,
        f" + {adapter_dir}" if adapter_dir else "",
        summary["exact_match"],
        summary["token_f1"],
        summary["n"],
    )
    return summary


def predictions_path(out_path: Path) -> Path:
    """Where run_lm_eval writes the per-item predictions for scores written to out_path."""
    return out_path.with_name(f"{out_path.stem}.predictions.jsonl")


def compare_base_and_tuned(
    cfg: EvaluateConfig, base_model: str, adapter_dir: Path, eval_jsonl: Path, eval_dir: Path
) -> dict:
    """Score the base student and base + adapter on the same items; write eval_dir/results.json.

    Layout: eval_dir/lm_eval_task/ (the task), base.json / tuned.json (scores),
    base.predictions.jsonl / tuned.predictions.jsonl (per item), results.json (both + delta).
    """
    eval_dir = Path(eval_dir)
    task_dir = eval_dir / "lm_eval_task"
    if task_dir.exists():
        shutil.rmtree(task_dir)  # a stale task folder must not mix into this run's items
    write_lm_eval_task(
        eval_jsonl, task_dir, DEFAULT_TASK_NAME, tokenizer_from=base_model, max_gen_toks=cfg.max_gen_toks
    )
    base = run_lm_eval(cfg, base_model, None, task_dir, DEFAULT_TASK_NAME, eval_dir / "base.json")
    tuned = run_lm_eval(cfg, base_model, Path(adapter_dir), task_dir, DEFAULT_TASK_NAME, eval_dir / "tuned.json")
    results = {
        "task": DEFAULT_TASK_NAME,
        "limit": cfg.limit,
        "base": base,
        "tuned": tuned,
        "delta": {metric: tuned[metric] - base[metric] for metric in METRICS},
    }
    (eval_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


evaluate_task = task(name="evaluate-lm-eval")(compare_base_and_tuned)
