"""Refresh flow: source -> ingest -> stage -> facts -> seeds -> teacher -> validate -> dedup -> balance
-> publish (a new version of the dataset line) -> review sample -> report. Documents (source.kind
documents): chunk -> document seeds, then the same stages from the teacher on."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.params import flow_config
from tasks.balance import balance_examples
from tasks.config import PipelineOverrides, overrides_dict, validate_overrides
from tasks.dedup import dedup_examples
from tasks.documents.chunk import chunk_task
from tasks.documents.corpus import write_example_corpus
from tasks.documents.seeds import build_document_seeds
from tasks.facts import compute_facts
from tasks.fanout import (
    SeedBatch, failed_batch_stats, merge_batch_files, merge_generation_stats, not_paid_again, run_batches, teacher_batches,
)
from tasks.errors import InputError, TeacherError
from tasks.llm.keys import check_api_keys
from tasks.ingest import SourcePart, ingest_files, read_source_part, source_files
from tasks.judge import judge_examples
from tasks.known import known_examples
from tasks.ports import load_ports
from tasks.publish import publish_task
from tasks.report import gate_steps, write_report
from tasks.review import export_review_task
from tasks.rundir import create_run_dir, finish_run, point_latest, update_stats
from tasks.stagecache import StageRunner, path_digest, prune_stage_cache
from tasks.seeds import build_seeds
from tasks.simulate import simulate
from tasks.stage import stage_positions
from tasks.teacher import generate_examples
from tasks.validate import validate_examples
from tasks.versions import dedup_reference, hold_dataset_line, latest_version, lineage_of, release_dataset_line

DEFAULT_CONFIG = "pipeline_configs/maritime_ais.yaml"
# the stages reused across runs, in order (tasks/stagecache.py); publish and the review sample always run
REFRESH_STAGES = ["simulate-ais", "ingest", "stage-positions", "compute-facts", "build-seed-questions",
                  "generate-examples", "validate-examples", "known", "judge", "dedup-semantic", "balance"]
DOCUMENT_STAGES = ["build-document-seeds", *REFRESH_STAGES[REFRESH_STAGES.index("generate-examples"):]]


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


def llm_finished(generated: dict) -> bool:
    """A generation result worth reusing: every LLM seed answered, nothing stopped by budget or rate limits
    (what is left undone must be retried by the next run, from the response cache for what was done)."""
    llm = generated.get("llm") or {}
    return not llm or (not llm.get("stopped") and llm.get("accepted") == llm.get("items"))


def read_files_side_by_side(stages: StageRunner, kind: str, files: list[Path], parts_dir: Path) -> list[SourcePart] | None:
    """Ingest fanned out over source files: each NMEA / DMA / parquet file decoded by its own task
    (read-<file>), through the flow's task runner, and reused across runs while the file is unchanged:
    a task and its part are named after the file and its content, not its position, so a nightly feed
    that gains a file decodes only that one. NOAA CSV needs none: DuckDB reads all files of the day
    range in parallel itself."""
    if kind == "noaa_csv":
        return None
    names = [f"read-{path.name}" for path in files]
    waits = [stages.submit(name, read_source_part, kind, path,
                           parts_dir / f"{path.name}.{path_digest(path).removeprefix('dir:')[:12]}.parquet",
                           outputs=("out_path",))
             for name, path in zip(names, files)]
    parts = [wait() for wait in waits]
    stages.group("read-source-files", names)
    return parts


def generate_in_batches(stages: StageRunner, cfg, work: Path, cache_path: Path, progress: bool) -> dict:
    """The teacher stage fanned out over teacher batches (tasks/fanout.py), each batch a reusable stage;
    merged into work/generated.jsonl, teacher_ledger.jsonl and quarantine_generate.parquet. A batch whose
    LLM teacher produced nothing keeps its quarantine; the run fails only when no batch produced anything."""
    log = get_run_logger()
    batches = teacher_batches(work / "seeds.jsonl", cfg.teacher, cfg.generate.seed, work / "generate")
    log.info("generation: %d seeds in %d batches (%s)", sum(b.seeds for b in batches), len(batches),
             ", ".join(f"{b.name}: {b.seeds}" for b in batches))
    failures: list[str] = []

    def one(batch: SeedBatch) -> dict:
        try:
            stats = stages.run(f"generate-{batch.name}", generate_examples, batch.seeds_path, cfg.teacher, cfg.generate.seed,
                               batch.out("generated.jsonl"), cache_path, batch.out("ledger.jsonl"),
                               batch.out("quarantine.parquet"), progress=progress,
                               # the ledger is what this run asked and paid: a reused batch asks nothing, so its
                               # ledger is not restored (a resumed run keeps its own, tasks.rundir.kept_on_resume)
                               outputs=("out_path", "quarantine_path"), ignore=("cache_path", "ledger_path", "progress"),
                               complete=llm_finished)
            record = stages.records[f"generate-{batch.name}"]
            return not_paid_again(stats, record.from_run) if record.reused else stats
        except TeacherError as exc:
            failures.append(f"{batch.name}: {exc}")
            return failed_batch_stats(batch)

    parts = run_batches(batches, one)
    merge_batch_files(batches, work / "seeds.jsonl", work / "generated.jsonl", work / "teacher_ledger.jsonl",
                      work / "quarantine_generate.parquet")
    generated = merge_generation_stats(parts)
    stages.group("generate-examples", [f"generate-{b.name}" for b in batches])
    if failures and not generated["generated"]:
        raise TeacherError("no teacher produced any example: " + "; ".join(failures))
    for failure in failures:
        log.warning("a generation batch produced nothing; its seeds are in quarantine: %s", failure)
    return generated


def artifact_key(lineage: str, kind: str = "report") -> str:
    """`<kind>-<line>`: Prefect artifact keys are lowercase letters, digits and dashes; one key per
    dataset line and kind (report, funnel, run-folder, evaluation...) keeps its history."""
    return f"{kind}-" + (re.sub(r"[^a-z0-9-]+", "-", lineage.lower()).strip("-") or "dataset")


def report_artifact(report: Path, key: str, what: str) -> None:
    """The run report as a Prefect markdown artifact under key (one key per line keeps its history)."""
    run_dir = report.parent
    # the UI cannot show the run folder's PNGs: the artifact names where they are instead
    artifact = re.sub(r"!\[(\w+)\]\((plots/[\w.]+)\)", lambda m: f"*{m[1]} plot: `{run_dir / m[2]}`*", report.read_text())
    create_markdown_artifact(markdown=artifact, key=key,
                             description=f"tidewright run {run_dir.name}: {what}; plots in {run_dir / 'plots'}")


def keep_stage_cache_small(cfg, cache_dir: Path, started: float, run_dir: Path, log) -> None:
    """run.stage_cache_max_gb: prune the entries used longest ago (tasks.stagecache.prune_stage_cache).
    The dataset is published by now: a cache that cannot be pruned is a warning, not a failed run."""
    if not cfg.run.stage_cache_max_gb or not cache_dir.exists():
        return
    try:
        pruned = prune_stage_cache(cache_dir, int(cfg.run.stage_cache_max_gb * 1e9), used_since=started)
    except OSError as exc:
        log.warning("stage cache %s could not be pruned (%s); free space there or lower run.stage_cache_max_gb", cache_dir, exc)
        return
    update_stats(run_dir, "stage_cache", pruned)
    if pruned["entries_removed"]:
        log.info("stage cache %s: %d entries used longest ago removed (%.1f MB), %.1f MB left (run.stage_cache_max_gb %g)",
                 cache_dir, pruned["entries_removed"], pruned["bytes_freed"] / 1e6, pruned["bytes_after"] / 1e6,
                 cfg.run.stage_cache_max_gb)


def ais_seeds(cfg, run_dir: Path, stages: StageRunner, log) -> tuple[str, dict, list[Path]]:
    """The AIS source: simulate or read -> ingest -> stage -> facts -> seed questions. Returns the
    source label, the seed stats and the source's quarantine files."""
    ports_path = cfg.ports.path
    kind = cfg.source.kind
    if kind == "simulator":
        sim = stages.run("simulate-ais", simulate, cfg.simulate, load_ports(ports_path), run_dir / "source",
                         outputs=("out_dir",))
        files, kind, source_label = [sim.csv_path], "noaa_csv", f"simulator (seed {cfg.simulate.seed}, {sim.vessels} vessels)"
        log.info("simulated %d AIS rows from %d vessels", sim.rows, sim.vessels)
    elif kind == "noaa_download":
        files, source_label = download_new_days(cfg, log), f"NOAA daily files {cfg.source.start}..{cfg.source.end}"
        kind = "noaa_csv"
    else:
        files, source_label = source_files(kind, Path(cfg.source.path)), f"{kind} {cfg.source.path}"

    db_path = run_dir / "warehouse.duckdb"
    ingested = stages.run("ingest", ingest_files, kind, files, db_path, run_dir / "work", cfg.stage.duckdb_memory_limit,
                          read_files_side_by_side(stages, kind, files, run_dir / "work" / "raw_parts"),
                          outputs=("db_path",), ignore=("work_dir", "memory_limit"), uses_sql=True)
    update_stats(run_dir, "ingest", {"rows": ingested.rows, "malformed": ingested.malformed,
                                     "files": ingested.per_file})
    # simulated traffic is not a feed: two simulator runs must not merge into one day's partition
    store_dir = cfg.stage.store_dir or (run_dir / "store" if cfg.source.kind == "simulator" else cfg.store_dir)
    staged = stages.run("stage-positions", stage_positions, db_path, run_dir / "staged", cfg.stage, store_dir,
                        outputs=("db_path", "out_dir", "store_dir"), updates=("db_path",), uses_sql=True)
    update_stats(run_dir, "stage", {"kept": staged.kept, "rejected": staged.rejected, "days": staged.days,
                                    "store_dir": str(staged.store_dir)})
    log.info("staged %d positions into %s (days %s), quarantined %s", staged.kept, staged.store_dir,
             ", ".join(staged.days), staged.rejected or "none")

    facts = stages.run("compute-facts", compute_facts, db_path, ports_path, cfg.facts, run_dir / "facts",
                       cfg.stage.duckdb_memory_limit, outputs=("db_path", "out_dir"), updates=("db_path",),
                       ignore=("memory_limit",), uses_sql=True)
    update_stats(run_dir, "facts", {"counts": facts.counts, "params": facts.params, "digests": facts.digests})
    log.info("facts %s", facts.counts)

    seeds = stages.run("build-seed-questions", build_seeds, staged.positions_path, facts.paths, facts.params,
                       facts.digests, ports_path, cfg.generate, run_dir / "work" / "seeds.jsonl", outputs=("out_path",))
    return source_label, seeds, [staged.quarantine_path]


def document_seeds(cfg, run_dir: Path, stages: StageRunner, log) -> tuple[str, dict, list[Path]]:
    """The documents source: the folder (the built-in corpus when source.path is empty) chunked into
    run_dir/documents -> seed questions. The chunk store re-chunks changed files only (its manifest
    of file digests is its cache), so it runs every time and says what it re-chunked."""
    store = cfg.documents.store_dir or Path(cfg.run.runs_dir) / "_documents"
    folder = Path(cfg.source.path) if cfg.source.path else store / "corpus"
    if cfg.source.path is None:
        write_example_corpus(folder)
    chunked = chunk_task(folder, cfg.documents, store, run_dir / "documents")
    update_stats(run_dir, "documents", chunked)
    log.info("documents: %d files, %d sections, %d chunks; re-chunked %s", chunked["files"], chunked["sections"],
             chunked["chunks"], ", ".join(chunked["rechunked"]) or "none (every file unchanged)")
    seeds = stages.run("build-document-seeds", build_document_seeds, Path(chunked["chunks_path"]),
                       Path(chunked["index_path"]), cfg.documents, run_dir / "work" / "seeds.jsonl", outputs=("out_path",))
    return f"documents {folder}", seeds, []


@flow(name="refresh", validate_parameters=False, on_completion=[release_dataset_line], on_failure=[release_dataset_line],
      on_crashed=[release_dataset_line], on_cancellation=[release_dataset_line])
def refresh(config: str = DEFAULT_CONFIG, overrides: PipelineOverrides | None = None, run_id: str | None = None) -> str:
    """Build and publish a verified dataset into runs/<run-id>/dataset; returns the run folder."""
    log = get_run_logger()
    cfg = flow_config(config, overrides)
    check_api_keys(cfg)  # before the run folder: a missing key is a config error, not a failed run
    # one refresh of a dataset line at a time (a second one fails fast naming the first); the hooks release it
    run_dir = create_run_dir(cfg, hold_dataset_line(cfg, run_id, cfg.run.lock_wait_s).run_id)
    log.info("run folder %s", run_dir)
    plan = (DOCUMENT_STAGES if cfg.source.kind == "documents" else REFRESH_STAGES[cfg.source.kind != "simulator":])
    started = time.time()
    stages = StageRunner(run_dir, Path(cfg.run.runs_dir) / "stage_cache", reuse=cfg.run.reuse_stages, plan=plan)
    interactive = sys.stderr.isatty()  # progress bars for the long stages when a person watches

    source = document_seeds if cfg.source.kind == "documents" else ais_seeds
    source_label, seeds, source_quarantine = source(cfg, run_dir, stages, log)
    update_stats(run_dir, "run", {"config": config, "overrides": overrides_dict(validate_overrides(overrides)), "source": source_label})
    update_stats(run_dir, "seeds", seeds)
    work = run_dir / "work"
    cache_path = cfg.teacher.cache_path or Path(cfg.run.runs_dir) / "teacher_cache.sqlite"
    generated = generate_in_batches(stages, cfg, work, cache_path, interactive)
    update_stats(run_dir, "generate", generated)
    log.info("teachers %s wrote %d examples; %d seeds quarantined", generated["teacher"], generated["generated"],
             generated["rejected"])
    if generated["llm"]:
        llm = generated["llm"]
        log.info("LLM teachers: %d calls, %d cache hits, %d+%d tokens, $%.4f%s", llm["calls"], llm["cache_hits"],
                 llm["input_tokens"], llm["output_tokens"], llm["cost_usd"],
                 f"; stopped: {llm['stopped']}" if llm["stopped"] else "")

    embedding_cache = cfg.dedup.cache_path or Path(cfg.run.runs_dir) / "embedding_cache.sqlite"
    validated = stages.run("validate-examples", validate_examples, work / "generated.jsonl", cfg.validate_,
                           work / "validated.jsonl", work / "quarantine_validate.parquet", embedding_cache,
                           outputs=("kept_path", "quarantine_path"), ignore=("embedding_cache",))
    update_stats(run_dir, "validate", validated)
    log.info("validators kept %d, rejected %d %s", validated["kept"], validated["rejected"], validated["reasons"])
    # the free filter before the paid one, both before dedup: dedup chooses among examples that passed every check
    known = stages.run("known", known_examples, work / "validated.jsonl", cfg.known, cfg.student, cfg.validate_,
                       work / "known.jsonl", work / "quarantine_known.parquet", outputs=("out_path", "quarantine_path"))
    update_stats(run_dir, "known", known)
    judged = stages.run("judge", judge_examples, work / "known.jsonl", cfg.judge, cfg.teacher, work / "judged.jsonl",
                        work / "quarantine_judge.parquet", cache_path, work / "judge_ledger.jsonl", progress=interactive,
                        outputs=("out_path", "quarantine_path"), ignore=("cache_path", "ledger_path", "progress"),
                        complete=lambda stats: not stats.get("stopped") and not stats.get("unscored"))
    if stages.records["judge"].reused:
        judged = not_paid_again(judged, stages.records["judge"].from_run)
    update_stats(run_dir, "judge", judged)
    for name, stage in (("already-known filter", known), ("LLM judge", judged)):
        if stage.get("enabled"):
            log.info("%s kept %d of %d %s", name, stage["kept"], stage["input"], stage["reasons"])
    lineage = lineage_of(cfg)
    previous = latest_version(cfg.run.runs_dir, lineage, exclude=run_dir)
    if previous is not None:
        log.info("dataset line %s: this run builds on version %s", lineage, previous.parent.name)
    reference = dedup_reference(previous) if cfg.dedup.against_published else []
    deduped = stages.run("dedup-semantic", dedup_examples, work / "judged.jsonl", cfg.dedup, work / "deduped.jsonl",
                         work / "quarantine_dedup.parquet", reference, embedding_cache, work / "deduped_embeddings.npy",
                         outputs=("out_path", "quarantine_path", "embeddings_path"), ignore=("cache_path",))
    update_stats(run_dir, "dedup", deduped)
    log.info("dedup kept %d (exact %d, near %d, repeats of the published version %d)", deduped["kept"],
             deduped["exact_duplicates"], deduped["near_duplicates"], deduped["published_duplicates"])
    balanced = stages.run("balance", balance_examples, work / "deduped.jsonl", cfg.balance, work / "balanced.jsonl",
                          work / "quarantine_balance.parquet", work / "deduped_embeddings.npy", previous,
                          outputs=("out_path", "quarantine_path"))
    update_stats(run_dir, "balance", balanced)
    if balanced["dropped"]:
        log.info("balancing kept %d of %d (%s)", balanced["kept"], balanced["input"], balanced["reasons"])

    published = publish_task(
        work / "balanced.jsonl",
        [*source_quarantine, work / "quarantine_generate.parquet", work / "quarantine_validate.parquet",
         work / "quarantine_known.parquet", work / "quarantine_judge.parquet", work / "quarantine_dedup.parquet",
         work / "quarantine_balance.parquet"],
        cfg.split, run_dir / "dataset", previous, {"lineage": lineage, "run_id": run_dir.name}, cfg.dedup,
        embedding_cache,
    )
    update_stats(run_dir, "publish", published)
    reviewed = export_review_task(run_dir / "dataset", cfg.review, run_dir / "review")
    update_stats(run_dir, "review_export", reviewed)
    update_stats(run_dir, "stages", stages.summary())
    reused = [name for name, record in stages.records.items() if record.reused]
    log.info("stages reused from earlier runs: %s", ", ".join(reused) if reused else "none")
    log.info("review sample: %d examples in %s (import decisions with `tidewright review-import`)",
             reviewed["sampled"], run_dir / "review")
    report_artifact(write_report(run_dir), artifact_key(lineage), "funnel, question mix, similarity")
    stats = json.loads((run_dir / "stats.json").read_text())
    create_table_artifact(
        key=artifact_key(lineage, "funnel"),
        table=[{"step": step, "examples left": left, "dropped and why": why} for step, left, why in gate_steps(stats)],
        description=f"Quality-gate funnel of run {run_dir.name}: generated -> each validator -> dedup -> balancing -> published",
    )
    create_link_artifact(key=artifact_key(lineage, "run-folder"), link=run_dir.resolve().as_uri(),
                         link_text=str(run_dir.resolve()), description=f"Run folder of {run_dir.name} (dataset, report, plots)")
    point_latest(run_dir)
    keep_stage_cache_small(cfg, stages.cache_dir, started, run_dir, log)
    finish_run(run_dir)
    log.info("published %d examples (%d carried from the previous version, %d new; train %d, eval %d) to %s",
             published["published"], published["carried"], published["added"], published["train_examples"],
             published["eval_examples"], run_dir / "dataset")
    return str(run_dir)


if __name__ == "__main__":
    refresh()
