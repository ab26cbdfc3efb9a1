"""Dataset versions: each run's dataset/ is one version of a line (publish.lineage, default the
domain): the newest earlier version of the line plus what the run adds. Versions are found by
their manifest, so there is no registry to fall out of step with the folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import PipelineConfig


def lineage_of(cfg: PipelineConfig) -> str:
    """publish.lineage, or the domain; a simulation is its own line (its config's hash), since
    simulated traffic is not a feed: two different simulations never merge into one dataset."""
    if cfg.publish.lineage:
        return cfg.publish.lineage
    if cfg.source.kind == "simulator":
        digest = hashlib.sha256(cfg.simulate.model_dump_json().encode()).hexdigest()[:8]
        return f"{cfg.run.domain}-sim-{digest}"
    return cfg.run.domain


def _manifest(dataset_dir: Path) -> dict[str, Any] | None:
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
        version = (_manifest(dataset_dir) or {}).get("version") or {}
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
