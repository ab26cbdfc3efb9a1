"""Writing stage artifacts: every file appears atomically (temp name, then rename)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

# one quarantine table for every stage: AIS rows and examples alike, the record kept as JSON
QUARANTINE_COLUMNS = ("stage", "reason", "record_id", "mmsi", "payload")


def quarantine_row(stage: str, reason: str, detail: str | None, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "reason": reason,
        "record_id": record.get("id"),
        "mmsi": str(record.get("mmsi")),
        "payload": json.dumps({**record, "rejection_detail": detail}, default=str),
    }


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_quarantine(rows: list[dict[str, Any]], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS)).astype("string")
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def replace_dir(new: Path, target: Path) -> None:
    """Swap a freshly written folder in place of target (readers see the old or the new one, except
    for the instant between the two renames: a kill there leaves target.old, put back here first)."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.exists():
        os.replace(old, target)
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, target)
