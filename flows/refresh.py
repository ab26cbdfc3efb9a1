"""Refresh flow: source -> ingest -> stage -> facts -> seeds -> teacher -> validate -> dedup -> publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.config import load_config
from tasks.dedup import dedup_task
from tasks.facts import facts_task
from tasks.errors import InputError
from tasks.ingest import ingest_task, source_files
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


def stored_days(store_dir: Path) -> set:
    from datetime import date

    folder = Path(store_dir) / "positions"
    if not folder.is_dir():
        return set()
    return {date.fromisoformat(p.name.split("=", 1)[1]) for p in folder.glob("date=*") if (p / "data.parquet").exists()}


def download_new_days(cfg, log) -> list[Path]:
    """The nightly source: NOAA daily zips not yet in the store, downloaded with retries/resume."""
    from tasks.sources.noaa_download import download_task

    src = cfg.source
    report = download_task(src.base_url, src.start, src.end, Path(src.download_dir),
                           already_ingested=stored_days(cfg.store_dir))
    log.info("download: %s", report.summary)
    if report.failed:
        log.warning("days that failed to download are left for the next run: %s", report.summary)
    if not report.files:
        raise InputError(f"no new NOAA days to ingest for {src.start}..{src.end} ({report.summary})")
    return [report.files[day] for day in sorted(report.files)]


@flow(name="refresh")
def refresh(config: str = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None, run_id: str | None = None) -> str:
    """Build and publish a verified dataset into runs/<run-id>/dataset; returns the run folder."""
    log = get_run_logger()
    cfg = load_config(config, overrides)
    run_dir = create_run_dir(cfg, run_id)
    log.info("run folder %s", run_dir)
    ports_path = cfg.ports.path

    kind = cfg.source.kind
    if kind == "simulator":
        sim = simulate_ais_task(cfg.simulate, load_ports(ports_path), run_dir / "source")
        files, kind, source_label = [sim.csv_path], "noaa_csv", f"simulator (seed {cfg.simulate.seed}, {sim.vessels} vessels)"
        log.info("simulated %d AIS rows from %d vessels", sim.rows, sim.vessels)
    elif kind == "noaa_download":
        files, source_label = download_new_days(cfg, log), f"NOAA daily files {cfg.source.start}..{cfg.source.end}"
        kind = "noaa_csv"
    else:
        files, source_label = source_files(kind, Path(cfg.source.path)), f"{kind} {cfg.source.path}"
    update_stats(run_dir, "run", {"config": config, "overrides": overrides or {}, "source": source_label})

    db_path = run_dir / "warehouse.duckdb"
    ingested = ingest_task(kind, files, db_path, run_dir / "work", cfg.stage.duckdb_memory_limit)
    update_stats(run_dir, "ingest", {"rows": ingested.rows, "malformed": ingested.malformed,
                                     "files": ingested.per_file})
    # simulated traffic is not a feed: two simulator runs must not merge into one day's partition
    store_dir = cfg.stage.store_dir or (run_dir / "store" if cfg.source.kind == "simulator" else cfg.store_dir)
    staged = stage_task(db_path, run_dir / "staged", cfg.stage, store_dir)
    update_stats(run_dir, "stage", {"kept": staged.kept, "rejected": staged.rejected, "days": staged.days,
                                    "store_dir": str(staged.store_dir)})
    log.info("staged %d positions into %s (days %s), quarantined %s", staged.kept, staged.store_dir,
             ", ".join(staged.days), staged.rejected or "none")

    facts = facts_task(db_path, ports_path, cfg.facts, run_dir / "facts", cfg.stage.duckdb_memory_limit)
    update_stats(run_dir, "facts", {"counts": facts.counts, "params": facts.params, "digests": facts.digests})
    log.info("facts %s", facts.counts)

    work = run_dir / "work"
    seeds = seeds_task(staged.positions_path, facts.paths, facts.params, facts.digests, ports_path, cfg.generate,
                       work / "seeds.jsonl")
    update_stats(run_dir, "seeds", seeds)
    cache_path = cfg.teacher.cache_path or Path(cfg.run.runs_dir) / "teacher_cache.sqlite"
    generated = generate_task(work / "seeds.jsonl", cfg.teacher, cfg.generate.seed, work / "generated.jsonl",
                              cache_path, work / "teacher_ledger.jsonl", work / "quarantine_generate.parquet")
    update_stats(run_dir, "generate", generated)
    log.info("teachers %s wrote %d examples; %d seeds quarantined", generated["teacher"], generated["generated"],
             generated["rejected"])
    if generated["llm"]:
        llm = generated["llm"]
        log.info("LLM teachers: %d calls, %d cache hits, %d+%d tokens, $%.4f%s", llm["calls"], llm["cache_hits"],
                 llm["input_tokens"], llm["output_tokens"], llm["cost_usd"],
                 f"; stopped: {llm['stopped']}" if llm["stopped"] else "")

    validated = validate_task(work / "generated.jsonl", cfg.validate_, work / "validated.jsonl",
                              work / "quarantine_validate.parquet")
    update_stats(run_dir, "validate", validated)
    log.info("grounding kept %d, rejected %d %s", validated["kept"], validated["rejected"], validated["reasons"])
    deduped = dedup_task(work / "validated.jsonl", cfg.dedup, work / "deduped.jsonl", work / "quarantine_dedup.parquet")
    update_stats(run_dir, "dedup", deduped)
    log.info("dedup kept %d (exact %d, near %d)", deduped["kept"], deduped["exact_duplicates"], deduped["near_duplicates"])

    published = publish_task(
        work / "deduped.jsonl",
        [staged.quarantine_path, work / "quarantine_generate.parquet", work / "quarantine_validate.parquet",
         work / "quarantine_dedup.parquet"],
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
