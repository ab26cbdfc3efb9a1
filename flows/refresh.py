"""Refresh flow: source -> ingest -> stage -> facts -> seeds -> teacher -> validate -> dedup -> publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.config import load_config
from tasks.dedup import dedup_task
from tasks.facts import facts_task
from tasks.ingest import ingest_task
from tasks.ports import load_ports
from tasks.publish import publish_task
from tasks.report import write_report
from tasks.rundir import create_run_dir, point_latest, update_stats
from tasks.seeds import seeds_task
from tasks.simulate import simulate_ais_task
from tasks.stage import stage_task
from tasks.teacher import generate_task
from tasks.validate import validate_task

DEFAULT_CONFIG = "pipeline_configs/maritime_ais.yaml"


@flow(name="refresh")
def refresh(config: str = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None, run_id: str | None = None) -> str:
    """Build and publish a verified dataset into runs/<run-id>/dataset; returns the run folder."""
    log = get_run_logger()
    cfg = load_config(config, overrides)
    run_dir = create_run_dir(cfg, run_id)
    log.info("run folder %s", run_dir)
    ports_path = cfg.ports.path

    if cfg.source.kind == "simulator":
        sim = simulate_ais_task(cfg.simulate, load_ports(ports_path), run_dir / "source")
        source_path, source_label = sim.csv_path, f"simulator (seed {cfg.simulate.seed}, {sim.vessels} vessels)"
        log.info("simulated %d AIS rows from %d vessels", sim.rows, sim.vessels)
    else:
        source_path, source_label = Path(cfg.source.path), f"NOAA CSV {cfg.source.path}"
    update_stats(run_dir, "run", {"config": config, "overrides": overrides or {}, "source": source_label})

    db_path = run_dir / "warehouse.duckdb"
    ingested = ingest_task(source_path, db_path)
    update_stats(run_dir, "ingest", {"rows": ingested.rows, "malformed": ingested.malformed, "source": str(source_path)})
    staged = stage_task(db_path, run_dir / "staged")
    update_stats(run_dir, "stage", {"kept": staged.kept, "rejected": staged.rejected})
    log.info("staged %d positions, quarantined %s", staged.kept, staged.rejected or "none")

    facts = facts_task(db_path, ports_path, cfg.facts, run_dir / "facts")
    update_stats(run_dir, "facts", {"counts": facts.counts, "params": facts.params, "digests": facts.digests})
    log.info("facts %s", facts.counts)

    work = run_dir / "work"
    seeds = seeds_task(staged.positions_path, facts.paths, facts.params, facts.digests, ports_path, cfg.generate,
                       work / "seeds.jsonl")
    update_stats(run_dir, "seeds", seeds)
    generated = generate_task(work / "seeds.jsonl", cfg.teacher, cfg.generate.seed, work / "generated.jsonl")
    update_stats(run_dir, "generate", generated)
    log.info("teacher %s wrote %d examples", generated["teacher"], generated["generated"])

    validated = validate_task(work / "generated.jsonl", cfg.validate_, work / "validated.jsonl",
                              work / "quarantine_validate.parquet")
    update_stats(run_dir, "validate", validated)
    log.info("grounding kept %d, rejected %d %s", validated["kept"], validated["rejected"], validated["reasons"])
    deduped = dedup_task(work / "validated.jsonl", cfg.dedup, work / "deduped.jsonl", work / "quarantine_dedup.parquet")
    update_stats(run_dir, "dedup", deduped)
    log.info("dedup kept %d (exact %d, near %d)", deduped["kept"], deduped["exact_duplicates"], deduped["near_duplicates"])

    published = publish_task(
        work / "deduped.jsonl",
        [staged.quarantine_path, work / "quarantine_validate.parquet", work / "quarantine_dedup.parquet"],
        cfg.split, run_dir / "dataset",
    )
    update_stats(run_dir, "publish", published)
    write_report(run_dir)
    point_latest(run_dir)
    log.info("published %d examples (train %d, eval %d) to %s", published["published"], published["train_examples"],
             published["eval_examples"], run_dir / "dataset")
    return str(run_dir)


if __name__ == "__main__":
    refresh()
