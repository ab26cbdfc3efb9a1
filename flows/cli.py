"""Command line: `tidewright run|refresh|train-eval --config FILE --set key=value ...`, and the human review
round trip: `tidewright review-export [--run-dir D]`, `tidewright review-import --file F [--run-dir D] [--force-edits]`.

Input and config mistakes are checked before Prefect starts and reported in one line (exit 2). A
train-eval (or run) that the incremental gate stopped before the full training exits 3, with the
failed categories in the summary and the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import TidewrightError

DEFAULT_CONFIG = "pipeline_configs/maritime_ais.yaml"
EXIT_STOPPED_AT_GATE = 3


def parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TidewrightError(f"--set {item!r} must look like section.key=value, e.g. --set train.max_steps=20")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def check_base_model(base_model: str | None) -> None:
    """A configured student must be a local model folder or already in the Hugging Face cache:
    runs are offline by default, so a missing model would otherwise fail after the whole refresh."""
    if not base_model:
        return
    path = Path(base_model)
    if path.exists():
        if not (path / "config.json").is_file():
            raise TidewrightError(f"student.base_model {base_model} is a folder without config.json; point it at a saved model")
        return
    if os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(base_model, "config.json"), str):
            raise TidewrightError(
                f"student.base_model {base_model} is not a local folder and not in the Hugging Face cache; "
                f"runs are offline by default: download it once (HF_HUB_OFFLINE=0 hf download {base_model}) "
                "or set student.base_model to a local folder"
            )


def preflight(command: str, config: str, overrides: dict[str, Any], run_dir: str | None, run_id: str | None,
              decisions: str | None = None) -> None:
    """Fail fast with a one-line message for the mistakes a user makes most."""
    from flows.params import refuse_pasted_keys
    from tasks.config import load_config
    from tasks.ingest import check_noaa_csv, source_files
    from tasks.llm.keys import check_api_keys
    from tasks.ports import load_ports
    from tasks.rundir import check_run_id, resolve_run_dir, run_folder_problem

    refuse_pasted_keys(overrides, redact=False)  # before Prefect stores the overrides as a flow run's parameters
    cfg = load_config(config, overrides)
    check_api_keys(cfg, generation=command in ("run", "refresh"), evaluation=command in ("run", "train-eval"))
    if command in ("run", "refresh"):
        load_ports(cfg.ports.path)
        if cfg.source.kind in ("noaa_csv", "dma_csv", "nmea", "parquet"):
            files = source_files(cfg.source.kind, Path(cfg.source.path))
            if cfg.source.kind == "noaa_csv":
                for f in files:
                    check_noaa_csv(f)
            elif cfg.source.kind == "dma_csv":
                from tasks.sources.dma import check_dma_csv

                for f in files:
                    check_dma_csv(f)
        chosen = run_id or cfg.run.run_id
        if chosen:
            check_run_id(chosen)
            if problem := run_folder_problem(cfg, Path(cfg.run.runs_dir) / chosen):  # an interrupted run may restart
                raise TidewrightError(problem)
        if cfg.judge.enabled:
            from tasks.judge import judge_runtime_config

            judge_runtime_config(cfg.judge, cfg.teacher)  # a judge model without a price fails before any money is spent
    if command in ("run", "train-eval") or (command == "refresh" and cfg.known.enabled):
        check_base_model(cfg.student.base_model)
    if command in ("train-eval", "review-export", "review-import"):
        run = resolve_run_dir(run_dir, cfg)
    if command == "review-export":
        from tasks.review import check_no_pending_decisions

        check_no_pending_decisions(run / "review", run / "dataset")
    if command == "review-import":
        from tasks.review import load_review_plan

        if not decisions:
            raise TidewrightError("review-import needs --file: the filled-in review_sample.csv (or .jsonl)")
        load_review_plan(run / "dataset", Path(decisions), cfg.review, cfg.validate_)


def review_summary(command: str, stats: dict[str, Any]) -> str:
    if command == "review-export":
        return (f"\nReview sample: {stats['sampled']} of {stats['examples']} examples ({stats['unreviewed']} not yet reviewed) "
                f"in {stats['out_dir']}/: review_sample.csv, review_sample.jsonl, README.md")
    if not stats["changed"]:
        return f"\nEvery decision in {stats['file']} is already in the dataset; nothing changed."
    return (f"\nImported {stats['file']}: accepted {stats['accepted']}, rejected {stats['rejected']}, edited {stats['edited']} "
            f"(forced {stats['forced_edits']}), not reviewed {stats['not_reviewed']}, already applied {stats['unchanged']}; "
            f"the dataset now holds {stats['examples']} examples (train {stats['train_examples']}, eval {stats['eval_examples']})")


def summary(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    lines = [f"\nDone. Output: {run_dir}/  (runs/latest points at it)"]
    for rel in ("dataset/train.jsonl", "dataset/eval.jsonl", "dataset/examples.parquet",
                "dataset/quarantine.parquet", "eval/results.json", "report.md", "plots/funnel.png",
                "review/review_sample.csv"):
        if (run_dir / rel).exists():
            lines.append(f"  {rel}")
    stats_path = run_dir / "stats.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        pub, gen = stats.get("publish") or {}, stats.get("generate") or {}
        if pub and gen:
            carried = f" + {pub['carried']} carried from {pub.get('parent')}" if pub.get("carried") else ""
            lines.append(f"  quality gate: {gen['generated']} generated -> {pub.get('added', pub['published'])} added{carried}; "
                         f"dataset {pub['published']} examples (train {pub['train_examples']}, eval {pub['eval_examples']}); "
                         "reasons in report.md")
        if stats.get("review_export"):
            lines.append(f"  human review: fill in the decision column, then tidewright review-import "
                         f"--file {run_dir / 'review' / 'review_sample.csv'} --run-dir {run_dir}")
        gate = stats.get("gate")
        if gate and "skipped" not in gate:
            outcome = "passed" if gate["passed"] else "STOPPED before the full run; failed categories: " + (
                ", ".join(gate["failed_categories"]) or "none (overall only)")
            lines.append(f"  incremental gate ({gate['examples']} examples, {gate['steps']} steps): {gate['metric']} "
                         f"{_num(gate['base'])} -> {_num(gate['tuned'])}, margin {gate['margin']}: {outcome}")
    results = run_dir / "eval" / "results.json"
    if results.exists():
        res = json.loads(results.read_text())
        sides = [side for side in ("base", "tuned", "teacher") if side in res]
        for metric in ("exact_match", "token_f1", "numeric_match", "correctly_refused", "citation_match"):
            if not any(metric in res[side] for side in sides):  # citation_match: documents only
                continue
            lines.append(f"  lm-eval {metric}: " + ", ".join(f"{side} {_num(res[side].get(metric))}" for side in sides))
        cost = res.get("cost")
        if cost:
            ratio = "n/a" if cost["ratio"] is None else f"{cost['ratio']}x"
            lines.append(f"  cost per 1,000 queries: teacher {cost['teacher_usd_per_1k']:.4f} USD, student "
                         f"{cost['student_usd_per_1k']:.4f} USD (ratio {ratio}); bases in report.md")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def stopped_at_gate(run_dir: Path) -> bool:
    stats_path = Path(run_dir) / "stats.json"
    gate = json.loads(stats_path.read_text()).get("gate") if stats_path.exists() else None
    return bool(gate) and not gate["passed"]


class _UserErrorsInOneLine(logging.Filter):
    """Prefect logs a failed task or flow with its traceback. For the errors a user causes (bad
    input or config: TidewrightError), the message says what to fix; the traceback only hides it.
    Anything else keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TidewrightError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_error_tracebacks() -> None:
    import prefect  # noqa: F401  (configures Prefect's logging handlers)

    one_line = _UserErrorsInOneLine()
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("prefect")]
    for logger in [logging.getLogger("prefect"), *loggers]:
        for handler in getattr(logger, "handlers", []):
            handler.addFilter(one_line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidewright", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "refresh", "train-eval", "review-export", "review-import"],
                        help="run: refresh then train+evaluate; refresh: build the dataset; train-eval: on an existing run; "
                        "review-export: a sample for human review; review-import: the reviewers' decisions into the dataset")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="pipeline config YAML (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set simulate.vessels=50 (repeatable)")
    parser.add_argument("--run-id", help="name of the run folder (default: <domain>-<UTC time>)")
    parser.add_argument("--run-dir", help="train-eval and review-*: run folder holding dataset/ (default: runs/latest)")
    parser.add_argument("--file", help="review-import: the filled-in review_sample.csv or .jsonl")
    parser.add_argument("--force-edits", action="store_true",
                        help="review-import: keep edited answers that fail the checks (grounding, plausibility, "
                        "triviality), marked, instead of stopping")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary Prefect server can take a while to start on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    try:
        overrides = parse_overrides(args.overrides)
        if args.force_edits:
            overrides["review.force_edits"] = True
        preflight(args.command, args.config, overrides, args.run_dir, args.run_id, args.file)
    except TidewrightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    _quiet_user_error_tracebacks()
    try:
        if args.command == "run":
            from flows.end_to_end import end_to_end

            run_dir = end_to_end(config=args.config, overrides=overrides or None, run_id=args.run_id)
        elif args.command == "refresh":
            from flows.refresh import refresh

            run_dir = refresh(config=args.config, overrides=overrides or None, run_id=args.run_id)
        elif args.command in ("review-export", "review-import"):
            from flows.review import review_export, review_import

            if args.command == "review-export":
                stats = review_export(config=args.config, overrides=overrides or None, run_dir=args.run_dir)
            else:
                stats = review_import(decisions=args.file, config=args.config, overrides=overrides or None, run_dir=args.run_dir)
            print(review_summary(args.command, stats))
            return 0
        else:
            from flows.train_eval import train_evaluate
            from tasks.config import load_config
            from tasks.rundir import resolve_run_dir

            run_dir = str(resolve_run_dir(args.run_dir, load_config(args.config, overrides)))
            train_evaluate(config=args.config, overrides=overrides or None, run_dir=run_dir)
    except TidewrightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(Path(run_dir)))
    if args.command in ("run", "train-eval") and stopped_at_gate(Path(run_dir)):
        return EXIT_STOPPED_AT_GATE
    return 0


if __name__ == "__main__":
    sys.exit(main())
