"""Run folders: runs/<run-id>/ holds every artifact of one run; runs/latest points at the newest."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from tasks.config import PipelineConfig
from tasks.errors import InputError, storage_error


def new_run_id(domain: str) -> str:
    return f"{domain}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.fullmatch(run_id) or run_id == "latest":
        raise InputError(f"run id {run_id!r} must be letters, digits, '.', '_' or '-' (and not 'latest')")
    return run_id


# present in a run folder from its start until the refresh finished: the run id can be started again
RUNNING_MARKER = ".running"


def kept_on_resume(path: Path) -> bool:
    """What an interrupted run keeps when it starts again: its teacher and judge ledgers (append-only
    records of what was paid for; the caches hold the answers themselves)."""
    return path.is_file() and path.name.endswith("ledger.jsonl")


def run_folder_problem(cfg: PipelineConfig, run_dir: Path) -> str | None:
    """Why run_dir cannot hold this run (None: it is new, empty, or an interrupted run of the same config)."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    if not (run_dir / RUNNING_MARKER).exists():
        return f"run folder {run_dir} already exists; pick another --run-id or delete that folder"
    saved = run_dir / "config.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) != cfg.model_dump(mode="json", by_alias=True):
        return (f"run folder {run_dir} holds an interrupted run with another config; start it again with its own "
                f"config ({saved}), or pick another --run-id")
    for manifest in run_dir.parent.glob("*/dataset/manifest.json"):
        parent = (json.loads(manifest.read_text()).get("version") or {}).get("parent")
        if parent == run_dir.name and not manifest.parent.parent.is_symlink():
            return (f"run folder {run_dir} holds an interrupted run whose dataset version run "
                    f"{manifest.parent.parent.name} already builds on; pick another --run-id")
    return None


def create_run_dir(cfg: PipelineConfig, run_id: str | None = None) -> Path:
    """A new, empty run folder. An existing one is refused (its old scores would mix with new data),
    unless it holds an interrupted run of the same config: that one starts again in the same folder,
    its finished stages coming back from the stage cache and its answered calls from the teacher cache."""
    runs_dir = Path(cfg.run.runs_dir)
    run_id = check_run_id(run_id or cfg.run.run_id or new_run_id(cfg.run.domain))
    run_dir = runs_dir / run_id
    if problem := run_folder_problem(cfg, run_dir):
        raise InputError(problem)
    try:
        if run_dir.exists():
            for entry in run_dir.iterdir():
                _clear(entry)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUNNING_MARKER).touch()
        config = run_dir / "config.yaml"
        config.with_name("config.yaml.tmp").write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False))
        config.with_name("config.yaml.tmp").replace(config)
    except OSError as exc:
        raise storage_error(exc, run_dir) or InputError(
            f"cannot create run folder {run_dir} ({exc.strerror}); set run.runs_dir to a writable folder") from None
    return run_dir


def _clear(entry: Path) -> None:
    """Remove what an interrupted attempt left under entry, except its ledgers (kept_on_resume)."""
    if kept_on_resume(entry) or entry.name == RUNNING_MARKER:
        return
    if entry.is_dir() and not entry.is_symlink():
        for child in entry.iterdir():
            _clear(child)
        if not any(entry.iterdir()):
            entry.rmdir()
    else:
        entry.unlink()


def finish_run(run_dir: Path) -> None:
    """Mark the refresh in run_dir finished: its run id can no longer be started again."""
    (Path(run_dir) / RUNNING_MARKER).unlink(missing_ok=True)


def point_latest(run_dir: Path) -> Path:
    """Atomically repoint runs/latest at run_dir (relative link, so the folder can move)."""
    run_dir = Path(run_dir)
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, latest)
    return latest


def resolve_run_dir(run_dir: str | Path | None, cfg: PipelineConfig) -> Path:
    """run_dir, else the run of the newest published version of this config's dataset line (several
    domains share runs/: runs/latest is only whichever refresh finished last), else runs/latest."""
    from tasks.versions import latest_version, lineage_of

    newest = None if run_dir else latest_version(cfg.run.runs_dir, lineage_of(cfg))
    path = Path(run_dir) if run_dir else newest.parent if newest is not None else Path(cfg.run.runs_dir) / "latest"
    if not (path / "dataset" / "train.jsonl").is_file():
        raise InputError(f"{path} holds no published dataset (dataset/train.jsonl); run the refresh flow first (make run)")
    return path.resolve()


def update_stats(run_dir: Path, section: str, values: dict[str, Any] | None) -> dict[str, Any]:
    """Set one section of the run's stats.json (atomically); None removes the section."""
    path = Path(run_dir) / "stats.json"
    stats = json.loads(path.read_text()) if path.exists() else {}
    if values is None:
        stats.pop(section, None)
    else:
        stats[section] = values
    tmp = path.with_name("stats.json.tmp")
    tmp.write_text(json.dumps(stats, indent=2, default=str))
    tmp.replace(path)
    return stats
