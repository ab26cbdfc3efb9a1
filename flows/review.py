"""Human review flows: export a stratified sample of a run's dataset for reviewers, import their decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.params import flow_config
from tasks.config import PipelineOverrides
from tasks.review import export_review_task, import_review_task
from tasks.report import write_report
from tasks.rundir import resolve_run_dir, update_stats
from tasks.versions import DatasetLineLock, lineage_of, read_manifest

DEFAULT_CONFIG = "pipeline_configs/maritime_ais.yaml"


@flow(name="review-export", validate_parameters=False)
def review_export(config: str = DEFAULT_CONFIG, overrides: PipelineOverrides | None = None, run_dir: str | None = None) -> dict:
    """Write runs/<id>/review/review_sample.{csv,jsonl} and README.md: review.share of the examples not yet reviewed."""
    log = get_run_logger()
    cfg = flow_config(config, overrides)
    run = resolve_run_dir(run_dir, cfg)
    stats = export_review_task(run / "dataset", cfg.review, run / "review")
    log.info("review sample: %d of %d examples (%d not yet reviewed) in %s", stats["sampled"], stats["examples"],
             stats["unreviewed"], stats["out_dir"])
    return stats


@flow(name="review-import", validate_parameters=False)
def review_import(decisions: str, config: str = DEFAULT_CONFIG, overrides: PipelineOverrides | None = None,
                  run_dir: str | None = None) -> dict:
    """Apply a filled-in review sample (CSV or JSONL) to runs/<id>/dataset."""
    log = get_run_logger()
    cfg = flow_config(config, overrides)
    run = resolve_run_dir(run_dir, cfg)
    # the version's own line, locked like a refresh: a refresh of that line never reads it half-rewritten
    line = ((read_manifest(run / "dataset") or {}).get("version") or {}).get("lineage") or lineage_of(cfg)
    with DatasetLineLock(run.parent, line).acquire(cfg.run.lock_wait_s) as lock:
        lock.claim(run.name, activity="review import into")
        stats = import_review_task(run / "dataset", Path(decisions), cfg.review, cfg.validate_)
        if stats["changed"]:
            log.info("review import: accepted %d, rejected %d, edited %d (forced %d), not reviewed %d, already applied %d",
                     stats["accepted"], stats["rejected"], stats["edited"], stats["forced_edits"], stats["not_reviewed"],
                     stats["unchanged"])
            refresh_run_counts(run, stats)
        else:
            log.info("review import: every decision in %s is already in the dataset; nothing changed", decisions)
    return stats


def refresh_run_counts(run: Path, imported: dict[str, Any]) -> None:
    """The run's stats and report follow the dataset after an import (counts from its manifest)."""
    manifest = json.loads((run / "dataset" / "manifest.json").read_text())
    stats_path = run / "stats.json"
    if not stats_path.exists():
        return
    publish = json.loads(stats_path.read_text()).get("publish", {})
    publish.update(published=manifest["examples"], train_examples=manifest["splits"]["train"],
                   eval_examples=manifest["splits"]["eval"], train_vessels=len(manifest["vessels"]["train"]),
                   eval_vessels=len(manifest["vessels"]["eval"]))
    update_stats(run, "publish", publish)
    update_stats(run, "review_import", {k: v for k, v in imported.items() if isinstance(v, (int, float, str))})
    write_report(run)


if __name__ == "__main__":
    review_export()
