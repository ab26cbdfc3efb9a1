"""Split by vessel: every example about one MMSI lands in the same split, so eval never
scores a vessel the student saw in training. Area questions (traffic in a cell, busiest ports)
are about no single vessel: each area fact is its own unit (`split_key` "area:<source hash>").
A unit already published keeps its side in every later version of the dataset.
With `split.time_cut` the split is by time window too: eval questions are about windows from the
cut on, train questions about windows that end by it.
Documents split by section (`split_key` "doc:<file>#<section id>", or "doc:<file>" with
documents.split_by: document): every example that relies on one section is on one side."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from tasks.config import SplitConfig
from tasks.errors import InputError


def split_key(example: dict[str, Any]) -> str:
    """The unit that goes to one side: the MMSI, or for an area question its fact."""
    return str(example.get("split_key") or example["mmsi"])


def _is_unit(key: str) -> bool:
    """Keys both sides must have: vessels (MMSI) and document sections or files ("doc:...")."""
    return key.isdigit() or key.startswith("doc:")


def _position(key: str, seed: int) -> float:
    """A vessel's fixed place in [0, 1): the same in every run, whatever other vessels appear."""
    return int(hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()[:12], 16) / 16**12


def assign_splits(examples: list[dict[str, Any]], cfg: SplitConfig, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Split key (MMSI) -> 'train' | 'eval'. Keys in `fixed` (published before) keep their side; a new
    vessel goes to eval when its hash position is below eval_share, so nightly refreshes keep each
    vessel on its side. With few vessels the hash may put all of them on one side: then the new
    vessel nearest the cut moves, so both splits hold a vessel."""
    fixed = dict(fixed or {})
    keys = {split_key(e) for e in examples} | set(fixed)
    new_vessels = sorted((k for k in keys if _is_unit(k) and k not in fixed), key=lambda m: _position(m, cfg.seed))
    # area facts follow their hash alone; the at-least-one-each rule below is about vessels
    out = {k: ("eval" if _position(k, cfg.seed) < cfg.eval_share else "train") for k in keys if k not in fixed}
    out.update(fixed)
    vessels = [k for k in keys if _is_unit(k)]
    if any(k.startswith("doc:") for k in vessels) and len(vessels) < 2:
        by_section = any("#" in k for k in vessels)
        raise InputError(
            f"the dataset covers {len(vessels)} document {'section' if by_section else 'file'}(s); a split by "
            f"{'section' if by_section else 'document'} needs at least 2 ("
            + ("add documents or sections" if by_section else "add documents, or set documents.split_by: section") + ")"
        )
    if len(vessels) < 2:
        raise InputError(
            f"the dataset covers {len(vessels)} vessel(s); a split by MMSI needs at least 2 "
            "(simulate more vessels or ingest more data)"
        )
    sides = {out[m] for m in vessels}
    if len(sides) == 1 and new_vessels:
        # the lowest hash position is nearest the eval side, the highest nearest train
        mover = new_vessels[0] if sides == {"train"} else new_vessels[-1]
        out[mover] = "eval" if sides == {"train"} else "train"
    return out


def time_holdout(example: dict[str, Any], side: str, cut: datetime | None) -> str | None:
    """Why an example cannot go to its side under the time cut (None: it can)."""
    if cut is None:
        return None
    start, end = example.get("window_start"), example.get("window_end")
    if not start or not end:
        return "the question has no time window to place against split.time_cut"
    if side == "eval" and datetime.fromisoformat(str(start)) < cut:
        return f"eval vessel, window starts {start}, before the cut {cut.isoformat()}"
    if side == "train" and datetime.fromisoformat(str(end)) > cut:
        return f"train vessel, window ends {end}, after the cut {cut.isoformat()}"
    return None
