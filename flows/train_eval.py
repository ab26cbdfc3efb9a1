"""Train + evaluate flow: an incremental gate on the first examples, then LoRA (QLoRA on CUDA) on
the published train split, then lm-eval base vs tuned vs teacher, and the cost ratio."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.params import flow_config
from flows.refresh import artifact_key, report_artifact
from tasks.config import PipelineConfig, PipelineOverrides
from tasks.evaluate import (
    DEFAULT_TASK_NAME,
    METRICS,
    cost_report,
    evaluate_task,
    gate_verdict,
    prepare_task,
    run_lm_eval,
    teacher_key,
)
from tasks.llm.ledger import read_ledger
from tasks.report import write_report
from tasks.rundir import resolve_run_dir, update_stats
from tasks.student import resolve_student
from tasks.train import TrainResult, train_task
from tasks.versions import lineage_of

DEFAULT_CONFIG = "pipeline_configs/maritime_ais.yaml"


# what a training run produces does not depend on these: a finished run is reused (and merged) as is
NOT_TRAINING_INPUTS = ("merge", "save_steps", "eval_steps")


def training_key(cfg_train: dict, base_model: str, dataset: Path, first_n: int | None = None) -> str:
    """Checkpoints are reused only for the same training inputs: config, student, data (and the
    gate's example count)."""
    inputs = {k: v for k, v in cfg_train.items() if k not in NOT_TRAINING_INPUTS}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode() + str(base_model).encode())
    digest.update(str(first_n).encode())
    for name in ("train.jsonl", "eval.jsonl"):
        digest.update((dataset / name).read_bytes())
    return digest.hexdigest()[:12]


def _training_corpus(train_jsonl: Path) -> list[str]:
    with open(train_jsonl) as fh:
        return [m["content"] for line in fh if line.strip() for m in json.loads(line)["messages"]]


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def _train_stats(trained: TrainResult, key: str, base_model: str) -> dict[str, Any]:
    return {
        "base_model": str(base_model), "method": trained.method, "device": trained.device, "steps": trained.steps,
        "examples": trained.examples, "train_loss": trained.train_loss, "eval_loss": trained.eval_loss,
        "eval_losses": [list(point) for point in trained.eval_losses],
        "seconds": trained.seconds, "adapter_dir": str(trained.adapter_dir), "training_key": key,
        "merged_dir": str(trained.merged_dir) if trained.merged_dir else None,
    }


def _eval_key(cfg: PipelineConfig) -> str:
    return artifact_key(lineage_of(cfg), "evaluation")


score_task = task(name="score-lm-eval", task_run_name="score-{out_path.parent.name}-{out_path.stem}")(run_lm_eval)
prepare_task_task = task(name="write-lm-eval-task")(prepare_task)


def run_gate(cfg: PipelineConfig, run: Path, base_model: str, base_scores: dict[str, Any]) -> dict[str, Any]:
    """Train on the first gate.first_n examples, score them, and compare with the base student."""
    dataset, eval_dir = run / "dataset", run / "eval"
    train_examples = _count_lines(dataset / "train.jsonl")
    if train_examples <= cfg.gate.first_n:
        return {"skipped": f"the train split has {train_examples} examples, not more than gate.first_n={cfg.gate.first_n}",
                "passed": True}
    # a probe: nothing to merge or export
    gate_train = cfg.train.model_copy(update={"max_steps": cfg.gate.max_steps, "merge": False})
    key = training_key(gate_train.model_dump(mode="json"), base_model, dataset, cfg.gate.first_n)
    trained = train_task.with_options(task_run_name=f"train-gate-first-{cfg.gate.first_n}")(
        gate_train, base_model, dataset / "train.jsonl", dataset / "eval.jsonl", run / "student" / f"gate-{key}",
        max_examples=cfg.gate.first_n,
    )
    tuned = score_task(cfg.evaluate, base_model, trained.adapter_dir, eval_dir / "lm_eval_task", DEFAULT_TASK_NAME,
                       eval_dir / "gate" / "tuned.json")
    verdict = gate_verdict(base_scores, tuned, cfg.gate.metric, cfg.gate.margin)
    verdict |= {"first_n": cfg.gate.first_n, "examples": trained.examples, "steps": trained.steps,
                "seconds": trained.seconds, "tuned_scores": tuned}
    (eval_dir / "gate.json").write_text(json.dumps(verdict, indent=2) + "\n", encoding="utf-8")
    return verdict


@flow(name="train-evaluate", validate_parameters=False)
def train_evaluate(config: str = DEFAULT_CONFIG, overrides: PipelineOverrides | None = None, run_dir: str | None = None) -> dict:
    """Gate on the first examples, fine-tune the student on runs/<id>/dataset, score base vs tuned
    vs teacher with lm-eval, and price both. Stops after the gate (with the report saying which
    categories failed) when the tuned student does not beat the base by gate.margin."""
    log = get_run_logger()
    cfg = flow_config(config, overrides)
    run = resolve_run_dir(run_dir, cfg)
    dataset, eval_dir = run / "dataset", run / "eval"
    teacher = cfg.eval_teacher()
    if teacher is not None:
        teacher_key(teacher)  # a missing key fails now, not after training
    # an earlier train-eval of this folder: its figures must not read as this run's
    (eval_dir / "results.json").unlink(missing_ok=True)
    (eval_dir / "gate.json").unlink(missing_ok=True)
    for section in ("gate", "train"):
        update_stats(run, section, None)
    base_model = resolve_student(cfg.student, _training_corpus(dataset / "train.jsonl"), run / "student" / "base")
    log.info("student %s", base_model)

    # the base student is scored once; the gate and the final comparison both use it
    prepare_task_task(cfg.evaluate, base_model, dataset / "eval.jsonl", eval_dir, cfg.validate_)
    base_scores = score_task(cfg.evaluate, base_model, None, eval_dir / "lm_eval_task", DEFAULT_TASK_NAME, eval_dir / "base.json")
    if cfg.gate.enabled:
        verdict = run_gate(cfg, run, base_model, base_scores)
        update_stats(run, "gate", {k: v for k, v in verdict.items() if k != "tuned_scores"})
        if not verdict["passed"]:
            log.warning(
                "incremental gate: tuned on the first %d examples, %s moved by %+.3f (needs %+.3f); not training on "
                "the full dataset. Categories that did not improve: %s",
                cfg.gate.first_n, cfg.gate.metric, verdict["gain"] or 0.0, cfg.gate.margin,
                ", ".join(verdict["failed_categories"]) or "none",
            )
            report_artifact(write_report(run), _eval_key(cfg), "stopped at the incremental gate")
            return {"stopped_at_gate": True, "gate": verdict}
        if "skipped" not in verdict:
            log.info("incremental gate passed: %s %+.3f on the first %d examples", cfg.gate.metric, verdict["gain"], cfg.gate.first_n)

    key = training_key(cfg.train.model_dump(mode="json"), base_model, dataset)
    trained = train_task(cfg.train, base_model, dataset / "train.jsonl", dataset / "eval.jsonl", run / "student" / f"lora-{key}")
    update_stats(run, "train", _train_stats(trained, key, base_model))
    log.info("trained %s: %d steps, loss %.3f", trained.method, trained.steps, trained.train_loss)

    note = None
    if teacher is None:
        note = ("evaluate.score_teacher is false" if not cfg.evaluate.score_teacher else
                "the run's only teacher is the offline template teacher, which has no endpoint to score "
                "(configure an API teacher to compare against it)")
    results = evaluate_task(cfg.evaluate, base_model, trained.adapter_dir, dataset / "eval.jsonl", eval_dir,
                            teacher=teacher, teacher_note=note, validate_cfg=cfg.validate_, base_scores=base_scores)
    results["cost"] = cost_report(results, eval_dir, base_model, read_ledger(run / "work" / "teacher_ledger.jsonl"),
                                  cfg.teacher.price_table(), cfg.evaluate, trained.device)
    (eval_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    cost = results["cost"]
    log.info("cost per 1,000 queries: teacher %.4f USD, student %.4f USD (ratio %s)",
             cost["teacher_usd_per_1k"], cost["student_usd_per_1k"], cost["ratio"])
    report_artifact(write_report(run), _eval_key(cfg), "gate, training, base vs tuned vs teacher, cost")
    sides = [side for side in ("base", "tuned", "teacher") if side in results]
    create_table_artifact(
        key=f"{_eval_key(cfg)}-scores",
        table=[{"model": side, **{m: results[side][m] for m in METRICS}, "n": results[side]["n"]} for side in sides],
        description=f"lm-eval scores of run {run.name} on the eval split",
    )
    create_table_artifact(
        key=f"{_eval_key(cfg)}-per-category",
        table=[{"category": category, "n": results["base"]["per_category"][category]["n"],
                **{f"{side} {m}": results[side]["per_category"].get(category, {}).get(m)
                   for side in sides for m in ("token_f1", "numeric_match")}}
               for category in sorted(results["base"]["per_category"])],
        description=f"Scores per category of run {run.name}: base, tuned and teacher",
    )
    create_table_artifact(
        key=f"{_eval_key(cfg)}-cost",
        table=[{"model": "teacher", "usd_per_1k_queries": cost["teacher_usd_per_1k"], "basis": cost["teacher_basis"]},
               {"model": "student", "usd_per_1k_queries": cost["student_usd_per_1k"], "basis": cost["student_basis"]}],
        description=f"Cost per 1,000 queries of run {run.name}: the teacher costs {cost['ratio']}x the student",
    )
    return results


if __name__ == "__main__":
    train_evaluate()
