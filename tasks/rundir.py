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
from tasks.errors import InputError


def new_run_id(domain: str) -> str:
    return f"{domain}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.fullmatch(run_id) or run_id == "latest":
        raise InputError(f"run id {run_id!r} must be letters, digits, '.', '_' or '-' (and not 'latest')")
    return run_id


def create_run_dir(cfg: PipelineConfig, run_id: str | None = None) -> Path:
    """A new, empty run folder. An existing one is refused: its old scores would mix with new data."""
    runs_dir = Path(cfg.run.runs_dir)
    run_id = check_run_id(run_id or cfg.run.run_id or new_run_id(cfg.run.domain))
    run_dir = runs_dir / run_id
    if run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"run folder {run_dir} already exists; pick another --run-id or delete that folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create run folder {run_dir} ({exc.strerror}); set run.runs_dir to a writable folder") from None
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False))
    return run_dir


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
    path = Path(run_dir) if run_dir else Path(cfg.run.runs_dir) / "latest"
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
