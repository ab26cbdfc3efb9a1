"""Ingest benchmark: tidewright's ingest + clean + one per-vessel aggregation against plain pandas.

The issue it answers:

    "Bench `bench/ingest.py`: makes N simulated rows as NOAA CSV (default 5 million; `--rows` for
    more), then times, in one run, this project's ingest + clean + one per-vessel aggregation
    against a straightforward pandas implementation of the same job; prints a table and, last, a
    line `rows_per_s=<n> ratio_vs_pandas=<x> peak_rss_mb=<m> pandas_peak_rss_mb=<m>`. Targets on
    2 cores: at least 3 million rows/s, at least 3x pandas, and 50 million rows ingested with peak
    memory under 3 GiB (out-of-core), where pandas needs the whole table."

    .venv/bin/python bench/ingest.py [--rows N] [--workdir DIR] [--skip-pandas] [--memory-limit 2GB]

Data. The project's simulator (tasks/simulate.py) writes the NOAA MarineCadastre CSVs: several
runs of at most CHUNK_ROWS rows each (the simulator holds a whole run in memory), each with its
own seed and a start date shifted by one simulated span, so no vessel reports twice at one time
across files. The file list goes to `ingest_files`, which takes a list. Vessels per run come from
a rows-per-vessel-week rate measured once on a small run. The CSVs are cached in
<workdir>/data-<N>/ with a manifest.json; generating them is not timed. The row count reported is
the exact number of data lines (duplicates the simulator plants included), at least N. Beyond
SIMULATED_ROWS_MAX rows the simulated files are reused with every BaseDateTime shifted to the
following weeks (manifest.json records copy_of and shift_hours): the same fleet sailing the same
tracks again, so vessels, days and the store grow as in real multi-week data.

Jobs. Each job runs in a fresh Python subprocess of this file, so its peak memory is its own.
Peak RSS is VmHWM from /proc/self/status, read by the child at its end: the kernel's high-water
mark of resident memory for that process's address space, imports (Prefect, pandas, DuckDB) and
DuckDB's buffer pool included. (`getrusage(RUSAGE_SELF).ru_maxrss`, the fallback off Linux, is
not used first because Linux carries the parent's high-water mark into it across fork + exec.)
Phase times are wall-clock and exclude imports; the table also shows wall time with imports.

- tidewright: `ingest_files("noaa_csv", files, db, memory_limit=M)` (raw_ais: a view over the CSV
  files, read in place; sql/stg_typed.sql types every row in one parallel pass into table
  typed_ais: not-available codes to NULL, invalid MMSI and position checks, md5 row_hash kept
  as a UUID, raw text kept for failing rows) -> `stage_positions(db, out, StageConfig(duckdb_memory_limit=M),
  store_dir=...)` (sql/stg_track_rejects.sql: exact duplicates, conflicting positions,
  impossible jumps; stg_ais_positions as a view; quarantine with reasons and payloads;
  day-partitioned parquet store written one day per thread; the run's staged/positions/ hard
  links) -> the `vessel_movement` fact (sql/vessel_movement.sql with FactsConfig's parameters,
  60-minute windows, >= 6 positions; time underway / moored / anchored needs the port table)
  via `tasks.sqlfiles.run_sql` on a fresh connection with the same memory limit, fetched as a
  DataFrame.
- pandas: `pd.read_csv` (default C engine, typed columns) -> the same cleaning rules in plain
  pandas -> the same per-vessel hourly aggregation (count, mean/max SOG, haversine distance
  between consecutive reports per vessel and window via groupby + shift), held in memory. It
  does not compute the movement fact's time per state or course changes.

What pandas does not do, so the comparison favours pandas: it writes nothing (no database, no
parquet store, no quarantine file), keeps no provenance (source_row, md5 row_hash per row, the
per-window source_hash), does not type or null-check the particulars (IMO, ROT, length, ...) and
assumes MMSI and BaseDateTime parse (read_csv would stop on a bad one; SQL quarantines it). Same
rules otherwise, including the impossible-jump rule; kept rows and window counts are printed for
both so a reader can see that the two jobs agree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_ROWS = 5_000_000
DEFAULT_WORKDIR = Path("/tmp/tidewright-bench")
CHUNK_ROWS = 2_500_000  # rows per simulator run: one run of this size peaks at about 1.5 GB
# beyond this many rows the simulated weeks are reused, shifted to later weeks (simulating costs
# about 20 s per million rows on 2 cores; copying a file with shifted times about 1 s)
SIMULATED_ROWS_MAX = 10_000_000
HOURS = 168.0  # one simulated week per run
RATE_VESSELS = 200  # the small run that measures rows per vessel-week
RATE_MARGIN = 1.03  # vessel counts vary in rows per week (the fleet mix is random)
GENERATE_WORKERS = 2
START = datetime(2024, 1, 15)
WINDOW_MINUTES = 60
MIN_POSITIONS = 6
MAX_IMPLIED_SPEED_KN = 60.0  # StageConfig's default
EARTH_RADIUS_NM = 3440.065  # sql/macros.sql haversine_nm


# --- data ----------------------------------------------------------------------------------


def _simulate_chunk(index: int, vessels: int, seed: int, start: str, hours: float, data_dir: str) -> dict:
    from tasks.config import SimulateConfig
    from tasks.ports import load_ports
    from tasks.simulate import simulate

    out = Path(data_dir) / f".chunk-{index:03d}"
    cfg = SimulateConfig(seed=seed, vessels=vessels, start=datetime.fromisoformat(start), hours=hours)
    result = simulate(cfg, load_ports(), out)
    target = Path(data_dir) / f"part-{index:03d}.csv"
    os.replace(result.csv_path, target)
    shutil.rmtree(out)
    return {"file": target.name, "rows": result.rows, "vessels": vessels, "seed": seed, "start": start, "hours": hours}


def rows_per_vessel_week(workdir: Path) -> float:
    """Rows one vessel writes in a simulated week, measured once on a small run and cached."""
    cache = workdir / "rate.json"
    if cache.exists():
        return json.loads(cache.read_text())["rows_per_vessel_week"]
    probe = workdir / ".rate-probe"
    probe.mkdir(parents=True, exist_ok=True)
    # in a worker, like the chunks: this process stays small, it is the parent of the timed jobs
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        info = pool.submit(_simulate_chunk, 0, RATE_VESSELS, 1, START.isoformat(), HOURS, str(probe)).result()
    shutil.rmtree(probe)
    rate = info["rows"] / RATE_VESSELS * (168.0 / HOURS)
    cache.write_text(json.dumps({"rows_per_vessel_week": rate, "vessels": RATE_VESSELS, "rows": info["rows"]}))
    return rate


def _shifted_copy(source: Path, target: Path, hours: float) -> None:
    """source, every BaseDateTime moved `hours` later; every other field as written."""
    import duckdb

    from tasks.sources.raw import NOAA_COLUMNS

    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in NOAA_COLUMNS) + "}"
    select = ", ".join(
        f"coalesce(strftime(try_strptime(\"BaseDateTime\", '%Y-%m-%dT%H:%M:%S') + to_seconds({int(hours * 3600)}), "
        f"'%Y-%m-%dT%H:%M:%S'), \"BaseDateTime\") as \"BaseDateTime\"" if c == "BaseDateTime" else f'"{c}"'
        for c in NOAA_COLUMNS
    )
    tmp = target.with_suffix(".tmp")
    with duckdb.connect() as con:
        con.execute("set preserve_insertion_order = true")
        con.execute(f"copy (select {select} from read_csv($src, header = true, auto_detect = false, columns = {columns})) "
                    "to $dst (format csv, header true)", {"src": str(source), "dst": str(tmp)})
    os.replace(tmp, target)


def make_data(rows: int, workdir: Path) -> tuple[list[Path], int, float]:
    """CSV files holding at least `rows` data lines; returns (files, exact rows, seconds spent)."""
    data_dir = workdir / f"data-{rows}"
    manifest_path = data_dir / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        files = [data_dir / c["file"] for c in manifest["chunks"]]
        if all(f.exists() for f in files):
            return files, manifest["rows"], 0.0
    started = time.perf_counter()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    rate = rows_per_vessel_week(workdir)
    chunks: list[dict] = []
    total = 0
    while total < min(rows, SIMULATED_ROWS_MAX):
        missing = min(rows, SIMULATED_ROWS_MAX) - total
        n = math.ceil(missing / CHUNK_ROWS)
        per_chunk = missing / n
        jobs = []
        for _ in range(n):
            index = len(chunks) + len(jobs)
            vessels = max(1, math.ceil(per_chunk / rate * RATE_MARGIN))
            start = (START + timedelta(hours=HOURS * index)).isoformat()
            jobs.append((index, vessels, 1000 + index, start, HOURS, str(data_dir)))
        with ProcessPoolExecutor(max_workers=min(GENERATE_WORKERS, n), mp_context=get_context("spawn")) as pool:
            done = list(pool.map(_simulate_chunk, *zip(*jobs)))
        chunks.extend(done)
        total = sum(c["rows"] for c in chunks)
        print(f"generated {total:,} rows in {len(chunks)} file(s) ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    simulated = list(chunks)
    span_hours = HOURS * len(simulated)
    while total < rows:  # later spans: the simulated weeks again, shifted in time
        source = simulated[len(chunks) % len(simulated)]
        shift = span_hours * (len(chunks) // len(simulated))
        target = data_dir / f"part-{len(chunks):03d}.csv"
        _shifted_copy(data_dir / source["file"], target, shift)
        chunks.append({**source, "file": target.name, "copy_of": source["file"], "shift_hours": shift})
        total += source["rows"]
        print(f"tiled {total:,} rows in {len(chunks)} file(s) ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    manifest = {"rows": total, "requested": rows, "rows_per_vessel_week": rate, "chunks": chunks}
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, manifest_path)
    return [data_dir / c["file"] for c in chunks], total, time.perf_counter() - started


# --- the two jobs (each runs in its own subprocess) ---------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM belongs to the process's own address space;
    ru_maxrss would also carry the parent's high-water mark across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def tidewright_job(files: list[Path], run_dir: Path, memory_limit: str) -> dict:
    from tasks.config import FactsConfig, StageConfig
    from tasks.facts import fact_params, load_port_table
    from tasks.ingest import ingest_files
    from tasks.ports import load_ports
    from tasks.sqlfiles import connect, run_sql
    from tasks.stage import stage_positions

    db = run_dir / "warehouse.duckdb"
    t0 = time.perf_counter()
    ingest = ingest_files("noaa_csv", files, db, memory_limit=memory_limit)
    t1 = time.perf_counter()
    stage = stage_positions(db, run_dir / "staged", StageConfig(duckdb_memory_limit=memory_limit), store_dir=run_dir / "store")
    t2 = time.perf_counter()
    params = fact_params("vessel_movement", FactsConfig(window_minutes=WINDOW_MINUTES, min_window_positions=MIN_POSITIONS))
    with connect(db, memory_limit) as con:
        load_port_table(con, load_ports(None))  # moored vs anchored: the distance to the nearest port
        movement = run_sql(con, "vessel_movement", params).df()
    t3 = time.perf_counter()
    return {
        "phases": {"ingest": t1 - t0, "clean": t2 - t1, "aggregate": t3 - t2},
        "stage_steps": stage.seconds,
        "rows_in": ingest.rows,
        "kept": stage.kept,
        "rejected": stage.rejected,
        "days": len(stage.days),
        "windows": len(movement),
    }


NOAA_DTYPES = {
    "MMSI": "int64", "LAT": "float64", "LON": "float64", "SOG": "float64", "COG": "float64",
    "Heading": "float64", "VesselName": "str", "IMO": "str", "CallSign": "str", "VesselType": "float64",
    "Status": "float64", "Length": "float64", "Width": "float64", "Draft": "float64", "Cargo": "float64",
    "TransceiverClass": "str",
}  # fmt: skip


def haversine_nm(lat1, lon1, lat2, lon2):
    import numpy as np

    lat1, lon1, lat2, lon2 = (np.radians(x) for x in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_NM * np.arcsin(np.sqrt(a))


def pandas_job(files: list[Path]) -> dict:
    import pandas as pd

    t0 = time.perf_counter()
    frames = [pd.read_csv(f, dtype=NOAA_DTYPES) for f in files]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    del frames
    df["ts"] = pd.to_datetime(df.pop("BaseDateTime"), format="%Y-%m-%dT%H:%M:%S")
    rows_in = len(df)
    t1 = time.perf_counter()

    # exact duplicates first (as the SQL's row_hash does, on every field), then the row checks
    df = df[~df.duplicated(keep="first")]
    valid = (
        df["MMSI"].between(201_000_000, 775_999_999)  # 9 digits, MID 201..775
        & df["LAT"].notna() & df["LON"].notna()
        & (df["LAT"] != 91) & (df["LON"] != 181)  # not-available position
        & (df["LAT"].abs() <= 90) & (df["LON"].abs() <= 180)
        & ~((df["LAT"] == 0) & (df["LON"] == 0))  # no GPS fix
    )
    df = df[valid].copy()
    # AIS not-available codes -> NaN: SOG 102.3, COG 360, Heading 511
    df["SOG"] = df["SOG"].where((df["SOG"] >= 0) & (df["SOG"] < 102.3))
    df["COG"] = df["COG"].where((df["COG"] >= 0) & (df["COG"] < 360))
    df["Heading"] = df["Heading"].where(df["Heading"].between(0, 359))
    # one vessel at two places in the same second: drop every report of that MMSI + second
    positions = df.drop_duplicates(["MMSI", "ts", "LAT", "LON"])
    per_key = positions.groupby(["MMSI", "ts"]).size()
    conflicts = per_key[per_key > 1].index
    df = df[~pd.MultiIndex.from_frame(df[["MMSI", "ts"]]).isin(conflicts)]
    # impossible jump: more than 60 kn needed both from the previous and to the next report
    df = df.sort_values(["MMSI", "ts"], kind="stable")
    track = df.groupby("MMSI", sort=False)
    prev_lat, prev_lon, prev_ts = track["LAT"].shift(1), track["LON"].shift(1), track["ts"].shift(1)
    next_lat, next_lon, next_ts = track["LAT"].shift(-1), track["LON"].shift(-1), track["ts"].shift(-1)
    from_prev = haversine_nm(prev_lat, prev_lon, df["LAT"], df["LON"]) / (df["ts"] - prev_ts).dt.total_seconds().clip(lower=1) * 3600
    to_next = haversine_nm(df["LAT"], df["LON"], next_lat, next_lon) / (next_ts - df["ts"]).dt.total_seconds().clip(lower=1) * 3600
    df = df[~((from_prev > MAX_IMPLIED_SPEED_KN) & (to_next > MAX_IMPLIED_SPEED_KN))]
    t2 = time.perf_counter()

    df = df.assign(window_start=df["ts"].dt.floor(f"{WINDOW_MINUTES}min"))  # still sorted by MMSI, ts
    window = df.groupby(["MMSI", "window_start"], sort=False)
    step = haversine_nm(window["LAT"].shift(1), window["LON"].shift(1), df["LAT"], df["LON"]).fillna(0)
    df = df.assign(step_nm=step)
    movement = df.groupby(["MMSI", "window_start"]).agg(
        n_positions=("ts", "size"),
        n_speeds=("SOG", "count"),
        first_seen=("ts", "min"),
        last_seen=("ts", "max"),
        mean_sog_kn=("SOG", "mean"),
        max_sog_kn=("SOG", "max"),
        distance_nm=("step_nm", "sum"),
        vessel_name=("VesselName", "max"),
        vessel_type=("VesselType", "max"),
    )
    movement = movement[(movement["n_positions"] >= MIN_POSITIONS) & (movement["n_speeds"] > 0)]
    t3 = time.perf_counter()
    return {
        "phases": {"ingest": t1 - t0, "clean": t2 - t1, "aggregate": t3 - t2},
        "rows_in": rows_in,
        "kept": len(df),
        "windows": len(movement),
    }


def run_script_job(script: Path, job: str, args: list[str]) -> dict:
    """Run `script --job job *args` in a fresh interpreter (so its peak memory is its own); its last
    stdout line is the JSON result, to which the wall time with imports is added."""
    command = [sys.executable, str(Path(script).resolve()), "--job", job, *args]
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{job} job failed (exit {done.returncode}); its error is above")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_with_imports"] = time.perf_counter() - started
    return result


def run_child(job: str, files: list[Path], run_dir: Path, memory_limit: str) -> dict:
    args = ["--run-dir", str(run_dir), "--memory-limit", memory_limit, "--files", *map(str, files)]
    return run_script_job(Path(__file__), job, args)


# --- report --------------------------------------------------------------------------------


def print_table(rows: int, files: int, tw: dict, pd_result: dict | None) -> None:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    columns = [("tidewright", tw), ("pandas", pd_result)]
    lines = [("phase", "tidewright", "pandas")]
    for phase, label in (("ingest", "ingest (read CSV) s"), ("clean", "clean / stage s"), ("aggregate", "aggregate s")):
        lines.append((label, *(fmt(r and r["phases"][phase], ".2f") for _, r in columns)))
    lines.append(("total s", *(fmt(r and r["total"], ".2f") for _, r in columns)))
    lines.append(("rows/s", *(fmt(r and rows / r["total"], ",.0f") for _, r in columns)))
    lines.append(("peak RSS MB", *(fmt(r and r["peak_rss_mb"], ",.0f") for _, r in columns)))
    lines.append(("rows in", *(fmt(r and r["rows_in"], ",d") for _, r in columns)))
    lines.append(("rows kept", *(fmt(r and r["kept"], ",d") for _, r in columns)))
    lines.append(("hourly windows", *(fmt(r and r["windows"], ",d") for _, r in columns)))
    lines.append(("wall incl. imports s", *(fmt(r and r["wall_with_imports"], ".1f") for _, r in columns)))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    print(f"\n{rows:,} NOAA CSV rows in {files} file(s); {os.cpu_count()} CPUs; DuckDB memory limit {tw['memory_limit']}")
    for i, line in enumerate(lines):
        print(f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:>{widths[2]}}")
        if i == 0:
            print("  ".join("-" * w for w in widths))
    rejected = ", ".join(f"{k} {v:,}" for k, v in tw["rejected"].items())
    print(f"tidewright quarantine: {rejected}; {tw['days']} day partitions")
    print("tidewright clean / stage steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in tw["stage_steps"].items()))
    if pd_result:
        print(f"ratio (pandas s / tidewright s): {pd_result['total'] / tw['total']:.2f}")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="at least this many CSV rows (default 5 million)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="CSV cache and run folders")
    parser.add_argument("--skip-pandas", action="store_true", help="time tidewright only (pandas needs the whole table in memory)")
    parser.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit for ingest, staging and the aggregation")
    parser.add_argument("--generate-only", action="store_true", help="make (or find) the CSV files and stop")
    parser.add_argument("--keep-run", action="store_true", help="keep the tidewright run folder (database, parquet) for inspection")
    parser.add_argument("--job", choices=("tidewright", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.job:  # child process: one job, result as the last stdout line
        if args.job == "tidewright":
            result = tidewright_job(args.files, args.run_dir, args.memory_limit)
        else:
            result = pandas_job(args.files)
        result["total"] = sum(result["phases"].values())
        result["peak_rss_mb"] = peak_rss_mb()
        result["memory_limit"] = args.memory_limit
        print(json.dumps(result))
        return

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    files, rows, generate_s = make_data(args.rows, workdir)
    print(f"data: {rows:,} rows in {len(files)} file(s) under {files[0].parent} "
          f"({'generated in %.0f s' % generate_s if generate_s else 'cached'})", file=sys.stderr)  # fmt: skip
    if args.generate_only:
        return

    run_dir = workdir / f"run-{args.rows}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    tw = run_child("tidewright", files, run_dir, args.memory_limit)
    if not args.keep_run:
        shutil.rmtree(run_dir)
    pd_result = None if args.skip_pandas else run_child("pandas", files, run_dir, args.memory_limit)

    print_table(rows, len(files), tw, pd_result)
    rows_per_s = rows / tw["total"]
    if pd_result:
        tail = f"ratio_vs_pandas={pd_result['total'] / tw['total']:.2f}", f"pandas_peak_rss_mb={pd_result['peak_rss_mb']:.0f}"
    else:
        tail = "ratio_vs_pandas=nan", "pandas_peak_rss_mb=nan"
    print(f"rows_per_s={rows_per_s:.0f} {tail[0]} peak_rss_mb={tw['peak_rss_mb']:.0f} {tail[1]}")


if __name__ == "__main__":
    main()
