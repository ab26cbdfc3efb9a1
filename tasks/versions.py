"""Dataset versions: each run's dataset/ is one version of a line (publish.lineage, default the
domain): the newest earlier version of the line plus what the run adds. Versions are found by
their manifest, so there is no registry to fall out of step with the folders."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import PipelineConfig
from tasks.errors import RunLockedError, storage_faults
from tasks.rundir import check_run_id, new_run_id


def lineage_of(cfg: PipelineConfig) -> str:
    """publish.lineage, or the domain; a simulation is its own line (its config's hash), since
    simulated traffic is not a feed: two different simulations never merge into one dataset."""
    if cfg.publish.lineage:
        return cfg.publish.lineage
    if cfg.source.kind == "simulator":
        digest = hashlib.sha256(cfg.simulate.model_dump_json().encode()).hexdigest()[:8]
        return f"{cfg.run.domain}-sim-{digest}"
    return cfg.run.domain


def read_manifest(dataset_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((dataset_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None  # a run that never published, or a half-written folder: not a version


def latest_version(runs_dir: Path, lineage: str, exclude: Path | None = None) -> Path | None:
    """The dataset folder of the newest published version of `lineage` (None if there is none)."""
    best: tuple[str, Path] | None = None
    for manifest_path in Path(runs_dir).glob("*/dataset/manifest.json"):
        dataset_dir = manifest_path.parent
        if dataset_dir.parent.is_symlink():
            continue  # runs/latest: the same version under another name
        if exclude is not None and dataset_dir.parent.resolve() == Path(exclude).resolve():
            continue
        version = (read_manifest(dataset_dir) or {}).get("version") or {}
        if version.get("lineage") == lineage and version.get("published_at"):
            key = (version["published_at"], dataset_dir.parent.name)
            if best is None or key > (best[0], best[1].parent.name):
                best = (version["published_at"], dataset_dir)
    return best[1] if best else None


def read_examples(dataset_dir: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """A version's examples (or some of their fields) with their messages as lists again."""
    frame = pd.read_parquet(Path(dataset_dir) / "examples.parquet", columns=columns)
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in rows:
        if isinstance(row.get("messages"), str):
            row["messages"] = json.loads(row["messages"])
    return rows


def review_rejected(dataset_dir: Path) -> list[dict[str, Any]]:
    """Examples a reviewer rejected from this version (or an earlier one it carries)."""
    path = Path(dataset_dir) / "quarantine.parquet"
    if not path.exists():
        return []
    q = pd.read_parquet(path)
    rows = q[q["stage"] == "review"]
    return [json.loads(p) for p in rows["payload"]]


def review_quarantine_rows(dataset_dir: Path | None) -> pd.DataFrame | None:
    """The review decisions a new version carries forward, so a later version remembers them."""
    if dataset_dir is None or not (Path(dataset_dir) / "quarantine.parquet").exists():
        return None
    q = pd.read_parquet(Path(dataset_dir) / "quarantine.parquet")
    return q[q["stage"] == "review"]


def dedup_reference(dataset_dir: Path | None) -> list[dict[str, Any]]:
    """What a new run must not repeat: the published examples and the ones review rejected."""
    if dataset_dir is None:
        return []
    fields = ["id", "question", "answer", "grounding"]
    published = read_examples(dataset_dir, fields)
    rejected = [{**{k: e.get(k) for k in fields}, "origin": "rejected in review"}
                for e in review_rejected(dataset_dir) if "question" in e and "answer" in e]
    return published + rejected


# --- one refresh per dataset line at a time ---------------------------------------------------------

LOCKS_DIR = ".locks"  # under runs_dir: one lock file per dataset line
_held: dict[str, "DatasetLineLock"] = {}  # flow run id (or "") -> the line lock it holds


class DatasetLineLock:
    """An exclusive lock on one dataset line (`<runs_dir>/.locks/<line>.lock`), held by a refresh from
    before the run folder is made until the flow ends, and by a review import while it rewrites a
    version: two writers of a line never interleave.

    flock(2): the kernel drops the lock when the holder's process dies (SIGKILL included), so a
    crashed run never leaves a stale lock behind. The file names the holder (run id, pid, host,
    start time) for the message the next refresh prints."""

    def __init__(self, runs_dir: Path, lineage: str):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", lineage)
        self.path = Path(runs_dir) / LOCKS_DIR / f"{safe}.lock"
        self.lineage = lineage
        self.run_id: str | None = None
        self._fh: Any = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another run"
        return (f"the {info.get('activity', 'refresh')} run {info.get('run_id')} "
                f"(pid {info.get('pid')} on {info.get('host')}, since {info.get('started_at')})")

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.2) -> "DatasetLineLock":
        """Take the lock, waiting up to wait_s seconds, or raise RunLockedError naming the holder."""
        with storage_faults(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    fh.close()
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise RunLockedError(
                        f"dataset line {self.lineage} is in use by {holder}{waited}; lock {self.path}. "
                        "Let that run finish (or stop it) and start this one again"
                    ) from None
                time.sleep(poll_s)
        self._fh = fh
        return self

    def claim(self, run_id: str, activity: str = "refresh") -> None:
        """Name run_id as the holder (what a run that finds the line locked prints)."""
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps({"run_id": run_id, "activity": activity, "pid": os.getpid(), "host": socket.gethostname(),
                                   "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        self._fh.flush()
        self.run_id = run_id

    def release(self) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()  # the next holder writes its own name; an empty file names nobody
            self._fh.close()  # closing the descriptor drops the flock
            self._fh = None

    def __enter__(self) -> "DatasetLineLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_dataset_line(cfg: PipelineConfig, run_id: str | None = None, wait_s: float = 0.0) -> DatasetLineLock:
    """Lock cfg's dataset line for the current flow run; `.run_id` is the run id to use (chosen after
    the lock is taken, so a waiting run never takes a timestamp id that the run it waited for used).
    `release_dataset_line` (the flow's completion, failure and crash hook) gives it back."""
    from prefect.context import FlowRunContext

    chosen = run_id or cfg.run.run_id
    if chosen:
        check_run_id(chosen)
    lock = DatasetLineLock(cfg.run.runs_dir, lineage_of(cfg)).acquire(wait_s)
    lock.claim(chosen or new_run_id(cfg.run.domain))
    context = FlowRunContext.get()
    key = str(context.flow_run.id) if context and context.flow_run else ""
    if key in _held:
        _held.pop(key).release()
    _held[key] = lock
    return lock


def release_dataset_line(flow: Any = None, flow_run: Any = None, state: Any = None) -> None:
    """Prefect flow hook (on_completion, on_failure, on_crashed, on_cancellation): release the
    dataset line lock that flow run took."""
    lock = _held.pop(str(flow_run.id) if flow_run is not None else "", None)
    if lock is not None:
        lock.release()
