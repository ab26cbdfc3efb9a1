"""Crash driver: a maritime refresh run as a subprocess, SIGKILLed at chosen points, started again with
the same run id until it completes, then compared with an uninterrupted run.

Kill points are found by watching the run: the "[k/n] <stage> ..." lines StageRunner logs as each
stage starts (tasks/stagecache.py), and for publishing the run folder itself (`dataset.partial`
exists only while a version is being written; `dataset/manifest.json` with the `.running` marker
still there is the window between publishing and the end of the run). After the marker a random
delay (up to `max_delay_s`) moves the kill somewhere inside the stage.

What is compared with the uninterrupted run: the published examples (id, teacher, category, form,
question, answer, split), no id lost or published twice, no torn file (every parquet, JSONL and JSON
in the run folder reads back; the manifest's checksums match), and no teacher call repeated for an
item whose answer an earlier attempt had already received (the ledgers the run keeps across
attempts: an item with an "ok" line before a kill may only come back as "cached").

Training's own kill and resume from its last checkpoint is tested in tests/tasks/test_train.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

from tasks.llm.loopback import LoopbackLLM

REPO = Path(__file__).resolve().parents[2]
KEY_ENV = "TW_CRASH_OPENAI_KEY"
KEY = "sk-test-PLANTED-crash-7e21a9"
DATASET_COLUMNS = ["id", "teacher", "category", "form", "question", "answer", "split"]


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: after `log_marker` appears in the run's log, or once `path_marker` exists in the
    run folder (a path relative to it; "+running" means only while the .running marker is still there)."""

    name: str
    log_marker: str | None = None
    path_marker: str | None = None
    max_delay_s: float = 1.0


# every stage of the maritime refresh in order; generation is fanned out in batches named generate-<batch>
KILL_POINTS = [
    KillPoint("simulate", log_marker=r"simulate-ais \.\.\."),
    KillPoint("ingest", log_marker=r"\] ingest \.\.\."),
    KillPoint("stage", log_marker=r"stage-positions \.\.\."),
    KillPoint("facts", log_marker=r"compute-facts \.\.\."),
    KillPoint("seeds", log_marker=r"build-seed-questions \.\.\."),
    KillPoint("generate", log_marker=r"generate-[\w-]+ \.\.\.", max_delay_s=1.5),
    KillPoint("validate", log_marker=r"validate-examples \.\.\."),
    KillPoint("dedup", log_marker=r"dedup-semantic \.\.\.", max_delay_s=3.0),
    KillPoint("balance", log_marker=r"\] balance \.\.\.", max_delay_s=0.3),
    KillPoint("publish", path_marker="dataset.partial", max_delay_s=0.05),
    KillPoint("after-publish", path_marker="dataset/manifest.json+running", max_delay_s=0.5),
]


def crash_config(path: Path, runs: Path, srv: LoopbackLLM, embedding_cache: Path, vessels: int = 8,
                 max_seeds: int = 40) -> Path:
    """A small simulated refresh whose LLM teacher is the loopback server (with a little latency, so
    generation lasts long enough to be killed inside). The embedding cache may be shared between the
    reference and the crashed runs: it holds vectors by text, never a decision."""
    path.write_text(yaml.safe_dump({
        "run": {"runs_dir": str(runs)},
        "dedup": {"cache_path": str(embedding_cache)},
        "publish": {"lineage": "crash"},
        "simulate": {"vessels": vessels, "hours": 12},
        "generate": {"max_seeds": max_seeds},
        "teacher": {
            "teachers": [
                {"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
                 "api_key_env": KEY_ENV, "share": 0.8, "concurrency": 2},
                {"name": "template", "kind": "template", "share": 0.2},
            ],
            "corrupt_share": 0.0, "backoff_base_s": 0.01,
        },
    }))
    return path


def refresh_command(config: Path, run_id: str) -> list[str]:
    """The refresh through the CLI, as a user restarts it: the same --run-id resumes an interrupted run."""
    return [sys.executable, "-m", "flows.cli", "refresh", "--config", str(config), "--run-id", run_id]


def start(config: Path, run_id: str, api_url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, KEY_ENV: KEY, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(refresh_command(config, run_id), cwd=REPO, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _reached(point: KillPoint, log: Path, run_dir: Path) -> bool:
    if point.log_marker:
        return log.exists() and re.search(point.log_marker, log.read_text(errors="replace")) is not None
    rel, _, running = point.path_marker.partition("+")
    return (run_dir / rel).exists() and (not running or (run_dir / ".running").exists())


@dataclass
class Attempt:
    target: str | None  # kill point aimed at (None: left to finish)
    killed: bool
    seconds: float
    returncode: int | None
    new_calls: int = 0  # teacher calls this attempt sent (ledger lines that are not cache replays)


@dataclass
class CrashOutcome:
    run_dir: Path
    attempts: list[Attempt]
    repeated_items: set[str] = field(default_factory=set)

    @property
    def kills(self) -> int:
        return sum(a.killed for a in self.attempts)


class LedgerWatch:
    """Reads every ledger the run keeps across attempts (work/**/*ledger.jsonl; merged ledgers repeat
    batch lines, so lines are told apart by their content) and finds items asked again after their
    answer had been received."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.seen: set[str] = set()
        self.answered: set[str] = set()
        self.repeated: set[str] = set()

    def after_attempt(self) -> int:
        """Account one finished or killed attempt; returns the calls it sent."""
        new = []
        for path in sorted((self.run_dir / "work").rglob("*ledger.jsonl")) if (self.run_dir / "work").exists() else []:
            for text in path.read_text().splitlines():
                if text.strip() and text not in self.seen:
                    self.seen.add(text)
                    try:
                        new.append(json.loads(text))
                    except ValueError:
                        pass  # a line cut by the kill: the try it records was never answered
        self.repeated |= {t["item_id"] for t in new if t["outcome"] != "cached" and t["item_id"] in self.answered}
        self.answered |= {t["item_id"] for t in new if t["outcome"] == "ok"}
        return sum(t["outcome"] != "cached" for t in new)


def run_with_kills(config: Path, runs: Path, run_id: str, api_url: str, targets: list[KillPoint], logs: Path,
                   rng: random.Random, max_restarts: int = 6, timeout_s: float = 300) -> CrashOutcome:
    """Start the run, kill it at each target in turn (an attempt that ends before its target is not
    killed), then start it again until it completes."""
    run_dir = runs / run_id
    watch = LedgerWatch(run_dir)
    attempts: list[Attempt] = []
    plan = [*targets, *[None] * max_restarts]
    for n, point in enumerate(plan):
        log = logs / f"{run_id}-{n}.log"
        began = time.monotonic()
        proc = start(config, run_id, api_url, log)
        killed = False
        while proc.poll() is None and time.monotonic() - began < timeout_s:
            if point is not None and _reached(point, log, run_dir):
                time.sleep(rng.uniform(0, point.max_delay_s))
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                break
            time.sleep(0.01)
        try:
            code = proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - began)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"attempt {n} of {run_id} ran past {timeout_s} s: {log.read_text()[-3000:]}") from None
        attempts.append(Attempt(point.name if point else None, killed, round(time.monotonic() - began, 2),
                                None if killed else code, watch.after_attempt()))
        if not killed and code != 0:
            raise AssertionError(f"attempt {n} of {run_id} failed (exit {code}): {log.read_text()[-3000:]}")
        if point is None and code == 0:
            return CrashOutcome(run_dir, attempts, watch.repeated)
    raise AssertionError(f"{run_id} did not complete in {len(plan)} attempts")


def published(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "dataset" / "examples.parquet")
    return frame[DATASET_COLUMNS].sort_values("id").reset_index(drop=True)


def torn_files(run_dir: Path) -> list[str]:
    """Files of a finished run that do not read back whole, leftovers of interrupted writes, and
    dataset files whose checksum differs from the manifest's."""
    torn = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_dir():
            if path.name.endswith((".partial", ".old")):
                torn.append(f"{rel} (left over)")
            continue
        if re.search(r"\.(tmp|writing\.\d+)$|\.partial/", rel):
            torn.append(f"{rel} (left over)")
            continue
        try:
            if path.suffix == ".parquet":
                pq.read_table(path)
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as exc:  # noqa: BLE001 (any reader error is a torn file)
            torn.append(f"{rel} ({type(exc).__name__})")
    manifest = json.loads((run_dir / "dataset" / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        if hashlib.sha256((run_dir / "dataset" / name).read_bytes()).hexdigest() != digest:
            torn.append(f"dataset/{name} (checksum differs from the manifest)")
    return torn


@dataclass
class Comparison:
    lost: int  # ids the uninterrupted run published that this one did not
    duplicated: int  # rows beyond one per id in train+eval, plus ids the uninterrupted run does not have
    different: int  # ids whose question, answer, split or teacher differ
    torn: list[str]


def compare(run_dir: Path, reference_dir: Path) -> Comparison:
    got, ref = published(run_dir), published(reference_dir)
    rows = []
    for split in ("train", "eval"):
        rows += [json.loads(line)["id"] for line in (run_dir / "dataset" / f"{split}.jsonl").read_text().splitlines()]
    ref_ids, got_ids = set(ref["id"]), set(got["id"])
    surplus = (len(rows) - len(set(rows))) + (len(got) - len(got_ids)) + len(got_ids - ref_ids)
    joined = got.merge(ref, on="id", suffixes=("", "_ref"))
    different = sum(any(r[c] != r[f"{c}_ref"] for c in DATASET_COLUMNS[1:]) for _, r in joined.iterrows())
    return Comparison(len(ref_ids - (got_ids & set(rows))), surplus, different, torn_files(run_dir))


def reference_run(config: Path, runs: Path, api_url: str, logs: Path) -> Path:
    """One uninterrupted run of config (its own runs folder, so its caches help no crashed run)."""
    proc = start(config, "reference", api_url, logs / "reference.log")
    assert proc.wait(timeout=600) == 0, (logs / "reference.log").read_text()[-3000:]
    return runs / "reference"


def kill_plan(rng: random.Random, kills: int) -> list[list[KillPoint]]:
    """Kill points for `kills` kills, grouped into runs: each run gets an ordered random subset of the
    points (an earlier stage is reused from the stage cache on restart, so one run can be killed
    once per stage), and every point is used before any is used twice."""
    order: list[KillPoint] = []
    while len(order) < kills:
        order += rng.sample(KILL_POINTS, len(KILL_POINTS))
    order = order[:kills]
    runs: list[list[KillPoint]] = []
    for point in order:
        for run in runs:
            if point not in run and len(run) < 4:
                run.append(point)
                break
        else:
            runs.append([point])
    return [sorted(run, key=KILL_POINTS.index) for run in runs]
