"""Train + evaluate flow: LoRA (QLoRA on CUDA) on the published train split, then lm-eval base vs tuned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.config import load_config
from tasks.evaluate import evaluate_task
from tasks.report import write_report
from tasks.rundir import resolve_run_dir, update_stats
from tasks.student import resolve_student
from tasks.train import train_task

DEFAULT_CONFIG = "pipeline_configs/maritime_ais.yaml"


def training_key(cfg_train: dict, base_model: str, dataset: Path) -> str:
    """Checkpoints are reused only for the same training inputs: config, student and data."""
    digest = hashlib.sha256(json.dumps(cfg_train, sort_keys=True).encode() + str(base_model).encode())
    for name in ("train.jsonl", "eval.jsonl"):
        digest.update((dataset / name).read_bytes())
    return digest.hexdigest()[:12]


def _training_corpus(train_jsonl: Path) -> list[str]:
    with open(train_jsonl) as fh:
        return [m["content"] for line in fh if line.strip() for m in json.loads(line)["messages"]]


@flow(name="train-evaluate")
def train_evaluate(config: str = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None, run_dir: str | None = None) -> dict:
    """Fine-tune the student on runs/<id>/dataset and score base vs tuned with lm-eval."""
    log = get_run_logger()
    cfg = load_config(config, overrides)
    run = resolve_run_dir(run_dir, cfg)
    dataset = run / "dataset"
    base_model = resolve_student(cfg.student, _training_corpus(dataset / "train.jsonl"), run / "student" / "base")
    log.info("student %s", base_model)
    key = training_key(cfg.train.model_dump(mode="json"), base_model, dataset)
    trained = train_task(cfg.train, base_model, dataset / "train.jsonl", dataset / "eval.jsonl", run / "student" / f"lora-{key}")
    update_stats(run, "train", {
        "base_model": str(base_model), "method": trained.method, "device": trained.device, "steps": trained.steps,
        "examples": trained.examples, "train_loss": trained.train_loss, "eval_loss": trained.eval_loss,
        "seconds": trained.seconds, "adapter_dir": str(trained.adapter_dir), "training_key": key,
    })
    log.info("trained %s: %d steps, loss %.3f", trained.method, trained.steps, trained.train_loss)
    results = evaluate_task(cfg.evaluate, base_model, trained.adapter_dir, dataset / "eval.jsonl", run / "eval")
    log.info("lm-eval base %s tuned %s", {k: results["base"][k] for k in ("exact_match", "token_f1")},
             {k: results["tuned"][k] for k in ("exact_match", "token_f1")})
    write_report(run)
    return results


if __name__ == "__main__":
    train_evaluate()
