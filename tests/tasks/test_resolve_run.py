"""Which run a train-eval or review works on by default: the newest version of its own dataset line,
not runs/latest (two domains share runs/, and latest is whichever refresh finished last)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasks.config import load_config
from tasks.rundir import resolve_run_dir
from tasks.versions import lineage_of

REPO = Path(__file__).resolve().parents[2]


def publish(runs: Path, run_id: str, lineage: str, published_at: str) -> Path:
    dataset = runs / run_id / "dataset"
    dataset.mkdir(parents=True)
    (dataset / "train.jsonl").write_text("{}\n")
    (dataset / "manifest.json").write_text(json.dumps({"version": {"lineage": lineage, "published_at": published_at}}))
    return runs / run_id


def test_the_newest_version_of_the_configs_own_line_not_latest(tmp_path):
    runs = tmp_path / "runs"
    ais = load_config(str(REPO / "pipeline_configs" / "maritime_ais.yaml"), {"run.runs_dir": str(runs)})
    ops = load_config(str(REPO / "pipeline_configs" / "maritime_ops.yaml"), {"run.runs_dir": str(runs)})
    assert lineage_of(ais) != lineage_of(ops)
    old = publish(runs, "ais-1", lineage_of(ais), "2026-11-20T02:00:00Z")
    new = publish(runs, "ais-2", lineage_of(ais), "2026-11-21T02:00:00Z")
    docs = publish(runs, "ops-1", lineage_of(ops), "2026-11-21T02:30:00Z")
    os.symlink("ops-1", runs / "latest")
    assert resolve_run_dir(None, ais) == new.resolve()
    assert resolve_run_dir(None, ops) == docs.resolve()
    assert resolve_run_dir(str(old), ais) == old.resolve()
