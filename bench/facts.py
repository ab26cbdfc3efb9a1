"""Facts benchmark: every detector scored against the simulator's ground truth, then one US-scale day timed.

The issue it answers (issue 4, item 3):

    "Bench bench/facts.py: simulates a week of 200 vessels, runs every detector, prints precision
    and recall per detector against the ground truth, then times all facts for one simulated day at
    US scale (about 9 million rows); last line `min_f1=<x> day_seconds=<s> rows=<n>`. Targets:
    every detector F1 >= 0.95; one day's facts in <= 60 s on 2 cores."

    .venv/bin/python bench/facts.py [--quick] [--skip-day] [--day-rows N] [--seed S] [--workdir DIR]

Part 1, accuracy. The simulator (tasks/simulate.py) writes a week of 200 vessels as NOAA CSV plus
its ground_truth_<name>.csv files; the real pipeline reads it: `ingest_files` -> `stage_positions`
-> `compute_facts` (every query in tasks.facts.FACT_QUERIES, at FactsConfig's defaults, which are
the facts contract's). Each fact table with a truth file is scored by tasks.scoring.SCORERS
(precision, recall, F1, tp/fp/fn; truncated events left out of both sides). The detector -> truth
pairing is FACT_TRUTH below (a fact whose truth file has its own name needs no entry), so a
detector registered later in FACT_QUERIES is scored as soon as the simulator writes its truth.
min_f1 is the smallest F1 over the scored detectors. The simulation is cached in
<workdir>/week-<key>/, keyed by the config and a hash of tasks/simulate.py (a changed simulator
writes new truth, so a stale cache would score against the wrong answers).

Part 2, speed. One simulated day at US scale (default 9 million rows, `--day-rows` to change):
several simulator runs of at most DAY_RUN_VESSELS = 1,000 vessels (the simulator's memory grows
faster than its fleet, so fewer, larger runs do not fit in memory), all starting at
DAY_START and lasting 24 h, so every row falls on the same date, in the US ports of the World
Port Index (../shared/data/ports/, thinned; see WORLD_PORT_INDEX) when it is there, else in the 20
built-in ports; compute_facts gets the same port table. Each run draws its MMSIs at
random from the US MIDs (338, 366-369); run k >= 1 then has those MIDs renamed to five MIDs of its
own (one per US MID, none shared), so no MMSI is broadcast by two runs' vessels at once. The
vessel count comes from bench/ingest.py's cached rows-per-vessel-week rate; runs are added until
the rows reach the target. The CSVs are cached in <workdir>/day-<N>/ with a manifest.json (delete it
to regenerate); generating them is not timed. Ingest + staging run in one fresh subprocess (not
timed), then `compute_facts` runs alone in another fresh subprocess: day_seconds is its wall time
(imports excluded), and peak RSS is that process's VmHWM (see bench/ingest.py). Per-fact seconds
come from the same single run: the child wraps tasks.facts.create_table_from_sql (the call that
runs each fact query) with a timer before calling compute_facts; "other" is the rest (port table,
parquet copies). compute_facts opens DuckDB with its defaults (threads = CPUs, memory limit 80 %
of RAM), as the pipeline does.

The last line is `min_f1=<x> day_seconds=<s> rows=<n>` (rows: the day's CSV data lines;
`day_seconds=nan rows=0` with --skip-day).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.ingest import peak_rss_mb, rows_per_vessel_week, run_script_job  # noqa: E402

DEFAULT_WORKDIR = Path("/tmp/tidewright-bench")
WEEK_VESSELS, WEEK_HOURS = 200, 168.0
DAY_ROWS = 9_000_000  # about one day of US coastal AIS (NOAA MarineCadastre daily files)
QUICK_VESSELS, QUICK_HOURS, QUICK_DAY_ROWS = 30, 48.0, 200_000
DEFAULT_SEED = 7
DAY_START = datetime(2024, 1, 15)
DAY_HOURS = 24.0
# vessels per simulator run (SimulateConfig allows 5,000): the simulator's time and memory grow faster
# than the fleet (a 4,600-vessel day passed 12 GB); a 1,000-vessel day takes ~11 s and ~1 GB
DAY_RUN_VESSELS = 1000
RATE_MARGIN = 1.03  # vessel counts vary in rows per day (the fleet mix is random)
GENERATE_WORKERS = 2
TARGET_F1, TARGET_DAY_SECONDS = 0.95, 60.0

# fact query -> the simulator's truth name (ground_truth_<name>.csv, key of tasks.scoring.SCORERS)
# where the two differ; every other fact is paired with the truth of its own name
FACT_TRUTH = {
    "vessel_movement": "movement",
    "ais_gaps": "gaps",
    "traffic_density": "traffic",
    "close_encounters": "encounters",
    "anomaly_jumps": "jumps",
}
US_MIDS = (338, 366, 367, 368, 369)  # tasks/simulate.py draws every valid MMSI from these
# The day's harbours: the US ports of the NGA World Port Index when ../shared has it (the project's
# 20 built-in ports would crowd 15,000 vessels into 20 harbours, and close encounters grow with the
# square of the crowd), thinned so ports keep DAY_PORT_SPACING_NM apart (the simulator places berths
# and anchorages clear of every other port and refuses closer pairs).
WORLD_PORT_INDEX = REPO_ROOT.parent / "shared" / "data" / "ports" / "nga_wpi_pub150_UpdatedPub150.csv.gz"
DAY_PORT_SPACING_NM = 8.0


def truth_name(fact: str) -> str:
    return FACT_TRUTH.get(fact, fact)


# --- scoring -------------------------------------------------------------------------------


def truth_files(truth_dir: Path) -> dict[str, Path]:
    """The simulator's truth files in a folder, by truth name (ground_truth_<name>.csv)."""
    prefix = "ground_truth_"
    return {p.stem[len(prefix):]: p for p in sorted(Path(truth_dir).glob(f"{prefix}*.csv"))}


def score_detectors(fact_paths: dict[str, Path], truth_dir: Path) -> tuple[dict[str, dict], list[str], list[str]]:
    """Score every fact table that has a truth file and a scorer.

    Returns (scores by fact name: truth, detected, truth_rows, precision, recall, f1, tp, fp, fn;
    facts with no truth to score against; truth files no registered fact is scored against)."""
    import pandas as pd

    from tasks.scoring import SCORERS

    truths = truth_files(truth_dir)
    scores: dict[str, dict] = {}
    unscored: list[str] = []
    for fact, path in fact_paths.items():
        name = truth_name(fact)
        if name not in truths or name not in SCORERS:
            unscored.append(fact)
            continue
        detected, truth = pd.read_parquet(path), pd.read_csv(truths[name])
        score = SCORERS[name](detected, truth)
        scores[fact] = {"truth": name, "detected": len(detected), "truth_rows": len(truth), **vars(score)}
    used = {s["truth"] for s in scores.values()}
    return scores, unscored, [name for name in truths if name not in used]


# --- data ----------------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def week_source(workdir: Path, vessels: int, hours: float, seed: int) -> tuple[Path, int, bool]:
    """The simulated week (CSV + truth files), cached by config and simulator source; (folder, rows, cached)."""
    from tasks.config import SimulateConfig
    from tasks.ports import load_ports
    from tasks.simulate import simulate

    cfg = SimulateConfig(vessels=vessels, hours=hours, seed=seed, start=DAY_START)
    key = hashlib.sha256((cfg.model_dump_json() + _file_digest(REPO_ROOT / "tasks" / "simulate.py")).encode()).hexdigest()[:12]
    folder = workdir / f"week-{vessels}v-{hours:g}h-seed{seed}-{key}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        return folder, json.loads(manifest.read_text())["rows"], True
    if folder.exists():
        shutil.rmtree(folder)
    result = simulate(cfg, load_ports(), folder)
    manifest.write_text(json.dumps({"rows": result.rows, "config": json.loads(cfg.model_dump_json())}))
    return folder, result.rows, False


def day_mid_map(index: int) -> dict[str, str]:
    """MID renaming for day run `index`: run 0 keeps the US MIDs, run k >= 1 gets five of its own."""
    if index == 0:
        return {}
    spare = [mid for mid in range(201, 776) if mid not in US_MIDS]  # valid MIDs are 201-775
    first = (index - 1) * len(US_MIDS)
    if first + len(US_MIDS) > len(spare):
        raise SystemExit(f"a day needs at most {len(spare) // len(US_MIDS) + 1} simulator runs; lower --day-rows")
    return {str(us): str(spare[first + i]) for i, us in enumerate(US_MIDS)}


def write_day_ports(world_port_index: Path, target: Path) -> Path:
    """The World Port Index's US ports (UN/LOCODE US...), greedily thinned to DAY_PORT_SPACING_NM
    apart, as a project port CSV (port_name, locode, lat, lon, region) for the simulator and the facts."""
    import numpy as np

    from tasks.geo import distance_nm
    from tasks.ports import load_ports

    ports = load_ports(world_port_index)
    ports = ports[ports["locode"].str.startswith("US", na=False)].reset_index(drop=True)
    keep: list[int] = []
    for i in range(len(ports)):
        kept = ports.loc[keep]
        if not keep or np.min(distance_nm(ports.at[i, "lat"], ports.at[i, "lon"], kept["lat"].to_numpy(), kept["lon"].to_numpy())) >= DAY_PORT_SPACING_NM:
            keep.append(i)
    ports.loc[keep].to_csv(target, index=False)
    return target


def _simulate_day_run(index: int, vessels: int, seed: int, data_dir: str) -> dict:
    """One simulator run of the day, written as part-<index>.csv with its MIDs renamed."""
    from tasks.config import SimulateConfig
    from tasks.ports import load_ports
    from tasks.simulate import simulate

    out = Path(data_dir) / f".run-{index:03d}"
    cfg = SimulateConfig(seed=seed, vessels=vessels, start=DAY_START, hours=DAY_HOURS)
    ports_path = Path(data_dir) / "ports.csv"
    result = simulate(cfg, load_ports(ports_path if ports_path.exists() else None), out)
    mids = day_mid_map(index)
    target = Path(data_dir) / f"part-{index:03d}.csv"
    rows, first_ts, last_ts = 0, None, None
    with open(result.csv_path) as source, open(target.with_suffix(".tmp"), "w") as sink:
        sink.write(source.readline())  # header
        for line in source:
            mmsi, ts, rest = line.split(",", 2)
            if len(mmsi) == 9 and mmsi[:3] in mids:
                line = f"{mids[mmsi[:3]]}{mmsi[3:]},{ts},{rest}"
            sink.write(line)
            rows += 1
            first_ts = first_ts or ts
            last_ts = ts  # the simulator writes rows sorted by BaseDateTime
    os.replace(target.with_suffix(".tmp"), target)
    shutil.rmtree(out)
    return {"file": target.name, "rows": rows, "vessels": vessels, "seed": seed, "first_ts": first_ts, "last_ts": last_ts}


def make_day_data(rows: int, workdir: Path) -> tuple[list[Path], int, float, Path | None]:
    """CSV files of one simulated day holding at least `rows` data lines: (files, exact rows, seconds
    spent, the port table they were simulated with: None for the built-in ports)."""
    wpi = WORLD_PORT_INDEX.is_file()
    data_dir = workdir / f"day-{rows}-{'wpi-us' if wpi else 'builtin-ports'}"
    manifest_path = data_dir / "manifest.json"
    ports_path = data_dir / "ports.csv" if wpi else None
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        files = [data_dir / run["file"] for run in manifest["runs"]]
        if all(f.exists() for f in files):
            return files, manifest["rows"], 0.0, ports_path
    started = time.perf_counter()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    if wpi:
        write_day_ports(WORLD_PORT_INDEX, ports_path)
    else:
        print(f"{WORLD_PORT_INDEX} is missing: the day uses the 20 built-in ports (crowded harbours, many more encounters)", file=sys.stderr)
    per_vessel_day = rows_per_vessel_week(workdir) * DAY_HOURS / 168.0
    runs: list[dict] = []
    total = 0
    while total < rows:
        vessels_needed = math.ceil((rows - total) / per_vessel_day * RATE_MARGIN)
        n = math.ceil(vessels_needed / DAY_RUN_VESSELS)
        jobs = [(len(runs) + i, math.ceil(vessels_needed / n), 2000 + len(runs) + i, str(data_dir)) for i in range(n)]
        with ProcessPoolExecutor(max_workers=min(GENERATE_WORKERS, n), mp_context=get_context("spawn")) as pool:
            runs.extend(pool.map(_simulate_day_run, *zip(*jobs)))
        total = sum(run["rows"] for run in runs)
        print(f"generated {total:,} rows in {len(runs)} file(s) ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    day = DAY_START.date().isoformat()
    off_day = [run["file"] for run in runs if not (run["first_ts"].startswith(day) and run["last_ts"].startswith(day))]
    if off_day:
        raise SystemExit(f"{', '.join(off_day)} hold rows outside {day}; the day must be one date")
    manifest = {"rows": total, "requested": rows, "day": day, "ports": str(ports_path or "built-in"), "runs": runs}
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, manifest_path)
    return [data_dir / run["file"] for run in runs], total, time.perf_counter() - started, ports_path


# --- jobs (each runs in its own subprocess) ------------------------------------------------


def week_job(workdir: Path, run_dir: Path, vessels: int, hours: float, seed: int) -> dict:
    """Part 1: simulate (or reuse) the week, ingest, stage, compute every fact, score each against its truth."""
    from tasks.config import FactsConfig
    from tasks.facts import compute_facts
    from tasks.ingest import ingest_files
    from tasks.stage import stage_positions

    t0 = time.perf_counter()
    source, rows, cached = week_source(workdir, vessels, hours, seed)
    t1 = time.perf_counter()
    db = run_dir / "warehouse.duckdb"
    ingest_files("noaa_csv", [source / "ais.csv"], db)
    stage = stage_positions(db, run_dir / "staged", store_dir=run_dir / "store")
    t2 = time.perf_counter()
    facts = compute_facts(db, None, FactsConfig(), run_dir / "facts")
    t3 = time.perf_counter()
    scores, unscored, untested = score_detectors(facts.paths, source)
    return {
        "source": str(source), "rows": rows, "cached": cached, "kept": stage.kept, "counts": facts.counts,
        "scores": scores, "unscored": unscored, "untested": untested,
        "seconds": {"simulate": t1 - t0, "ingest_stage": t2 - t1, "facts": t3 - t2, "score": time.perf_counter() - t3},
    }  # fmt: skip


def day_stage_job(files: list[Path], run_dir: Path, memory_limit: str) -> dict:
    """Part 2, not timed: the day's CSVs through ingest and staging into run_dir/warehouse.duckdb."""
    from tasks.config import StageConfig
    from tasks.ingest import ingest_files
    from tasks.stage import stage_positions

    t0 = time.perf_counter()
    db = run_dir / "warehouse.duckdb"
    ingest = ingest_files("noaa_csv", files, db, memory_limit=memory_limit)
    stage = stage_positions(db, run_dir / "staged", StageConfig(duckdb_memory_limit=memory_limit), store_dir=run_dir / "store")
    return {"rows_in": ingest.rows, "kept": stage.kept, "rejected": stage.rejected, "seconds": time.perf_counter() - t0}


def day_facts_job(run_dir: Path, ports_path: str | None) -> dict:
    """Part 2, timed: compute_facts over the staged day, with per-fact seconds from the same run."""
    import tasks.facts
    from tasks.config import FactsConfig

    run_query = tasks.facts.create_table_from_sql
    per_fact: dict[str, float] = {}

    def timed(con, table, name, params=None):
        started = time.perf_counter()
        try:
            return run_query(con, table, name, params)
        finally:
            per_fact[name] = time.perf_counter() - started

    tasks.facts.create_table_from_sql = timed  # instrumentation only: the real query runs unchanged
    cpu_before, started = time.process_time(), time.perf_counter()
    facts = tasks.facts.compute_facts(run_dir / "warehouse.duckdb", ports_path and Path(ports_path), FactsConfig(), run_dir / "facts")
    seconds = time.perf_counter() - started
    # CPU seconds of all this process's threads: with other work on the machine, wall time grows, this does not
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu_before, "per_fact": per_fact, "counts": facts.counts}


def run_child(job: str, **kwargs) -> dict:
    """Run one job in a fresh interpreter; its last stdout line is the JSON result."""
    return run_script_job(Path(__file__), job, ["--job-args", json.dumps(kwargs, default=str)])


def _child(job: str, kwargs: dict) -> dict:
    paths = {"workdir", "run_dir"}
    kwargs = {k: Path(v) if k in paths else v for k, v in kwargs.items()}
    if job == "week":
        result = week_job(**kwargs)
    elif job == "day-stage":
        result = day_stage_job([Path(f) for f in kwargs.pop("files")], **kwargs)
    else:
        result = day_facts_job(**kwargs)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# --- report --------------------------------------------------------------------------------


def _table(lines: list[tuple], right_from: int = 1) -> None:
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        cells = [f"{str(c):<{w}}" if i < right_from else f"{str(c):>{w}}" for i, (c, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths).rstrip())


def print_week(week: dict, vessels: int, hours: float, seed: int) -> None:
    print(f"\nPart 1: detectors against the simulator's truth ({vessels} vessels, {hours:g} h, seed {seed}; "
          f"{week['rows']:,} CSV rows, {week['kept']:,} staged)")  # fmt: skip
    lines = [("detector", "truth", "detected", "truth rows", "precision", "recall", "F1", "tp", "fp", "fn", "")]
    for fact, s in sorted(week["scores"].items(), key=lambda item: item[1]["f1"]):
        lines.append((fact, s["truth"], f"{s['detected']:,}", f"{s['truth_rows']:,}", f"{s['precision']:.4f}", f"{s['recall']:.4f}",
                      f"{s['f1']:.4f}", f"{s['tp']:,}", f"{s['fp']:,}", f"{s['fn']:,}", "" if s["f1"] >= TARGET_F1 else "< 0.95"))  # fmt: skip
    _table(lines, right_from=2)
    if week["unscored"]:
        print(f"not scored (the simulator writes no truth for them): {', '.join(week['unscored'])}")
    if week["untested"]:
        print(f"truth files with no registered detector: {', '.join(week['untested'])}")
    sec = week["seconds"]
    print(f"simulate {sec['simulate']:.1f} s{' (cached)' if week['cached'] else ''}, ingest + stage {sec['ingest_stage']:.1f} s, "
          f"facts {sec['facts']:.1f} s, scoring {sec['score']:.1f} s; peak RSS {week['peak_rss_mb']:,.0f} MB")  # fmt: skip


def print_day(rows: int, files: int, stage: dict, facts: dict, ports_path: Path | None) -> None:
    ports = "the built-in ports" if ports_path is None else f"{sum(1 for _ in open(ports_path)) - 1} US ports of the World Port Index"
    print(f"\nPart 2: all facts over one simulated day: {rows:,} CSV rows in {files} file(s), {stage['kept']:,} staged "
          f"(ingest + stage {stage['seconds']:.1f} s, not timed), {ports}; {os.cpu_count()} CPUs")  # fmt: skip
    lines = [("fact", "rows", "seconds")]
    for fact, seconds in facts["per_fact"].items():
        lines.append((fact, f"{facts['counts'].get(fact, 0):,}", f"{seconds:.2f}"))
    lines.append(("other (port table, parquet copies)", "", f"{facts['seconds'] - sum(facts['per_fact'].values()):.2f}"))
    lines.append(("compute_facts total", "", f"{facts['seconds']:.2f}"))
    _table(lines)
    verdict = "meets" if facts["seconds"] <= TARGET_DAY_SECONDS else "misses"
    print(f"{verdict} the {TARGET_DAY_SECONDS:.0f} s target; CPU {facts['cpu_seconds']:.1f} s (all threads); "
          f"peak RSS {facts['peak_rss_mb']:,.0f} MB; wall incl. imports {facts['wall_with_imports']:.1f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_VESSELS} vessels x {QUICK_HOURS:g} h scored, a {QUICK_DAY_ROWS:,}-row day timed")  # fmt: skip
    parser.add_argument("--skip-day", action="store_true", help="score the detectors only (part 1)")
    parser.add_argument("--skip-week", action="store_true", help="time the day's facts only (part 2)")
    parser.add_argument("--day-rows", type=int, help=f"rows in the timed day (default {DAY_ROWS:,}; --quick {QUICK_DAY_ROWS:,})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="simulator seed of the scored week")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="data cache and run folders")
    parser.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit for the day's ingest and staging")
    parser.add_argument("--keep-run", action="store_true", help="keep the run folders (databases, fact parquet) for inspection")
    parser.add_argument("--job", choices=("week", "day-stage", "day-facts"), help=argparse.SUPPRESS)
    parser.add_argument("--job-args", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.job:  # child process: one job, result as the last stdout line
        print(json.dumps(_child(args.job, json.loads(args.job_args)), default=str))
        return

    if args.day_rows is not None and args.day_rows < 1:
        parser.error("--day-rows must be a positive number of rows")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    vessels, hours = (QUICK_VESSELS, QUICK_HOURS) if args.quick else (WEEK_VESSELS, WEEK_HOURS)
    day_rows = args.day_rows or (QUICK_DAY_ROWS if args.quick else DAY_ROWS)

    min_f1 = float("nan")
    if not args.skip_week:
        week_dir = workdir / f"facts-run-week-{vessels}v-seed{args.seed}"
        shutil.rmtree(week_dir, ignore_errors=True)
        week_dir.mkdir(parents=True)
        week = run_child("week", workdir=workdir, run_dir=week_dir, vessels=vessels, hours=hours, seed=args.seed)
        if not args.keep_run:
            shutil.rmtree(week_dir)
        print_week(week, vessels, hours, args.seed)
        f1s = [s["f1"] for s in week["scores"].values()]
        min_f1 = min(f1s) if f1s else float("nan")

    day_seconds, rows = float("nan"), 0
    if not args.skip_day:
        files, rows, generate_s, ports_path = make_day_data(day_rows, workdir)
        print(f"day data: {rows:,} rows in {len(files)} file(s) under {files[0].parent} "
              f"({'generated in %.0f s' % generate_s if generate_s else 'cached'})", file=sys.stderr)  # fmt: skip
        day_dir = workdir / f"facts-run-day-{day_rows}"
        shutil.rmtree(day_dir, ignore_errors=True)
        day_dir.mkdir(parents=True)
        stage = run_child("day-stage", files=[str(f) for f in files], run_dir=day_dir, memory_limit=args.memory_limit)
        facts = run_child("day-facts", run_dir=day_dir, ports_path=ports_path and str(ports_path))
        if not args.keep_run:
            shutil.rmtree(day_dir)
        print_day(rows, len(files), stage, facts, ports_path)
        day_seconds = facts["seconds"]

    print()
    print(f"min_f1={min_f1:.4f} day_seconds={day_seconds:.2f} rows={rows}")


if __name__ == "__main__":
    main()
