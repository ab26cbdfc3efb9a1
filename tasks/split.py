"""Split by vessel: every example about one MMSI lands in the same split, so eval never
scores a vessel the student saw in training. Area questions (traffic in a cell, busiest ports)
are about no single vessel: each area fact is its own unit (`split_key` "area:<source hash>")."""

from __future__ import annotations

import hashlib
from typing import Any

from tasks.config import SplitConfig
from tasks.errors import InputError


def split_key(example: dict[str, Any]) -> str:
    """The unit that goes to one side: the MMSI, or for an area question its fact."""
    return str(example.get("split_key") or example["mmsi"])


def _position(key: str, seed: int) -> float:
    """A vessel's fixed place in [0, 1): the same in every run, whatever other vessels appear."""
    return int(hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()[:12], 16) / 16**12


def assign_splits(examples: list[dict[str, Any]], cfg: SplitConfig) -> dict[str, str]:
    """Split key (MMSI) -> 'train' | 'eval'. A vessel goes to eval when its hash position is below eval_share,
    so nightly refreshes keep each vessel on its side. With few vessels the hash may put all of
    them on one side: then the vessel nearest the cut moves, so both splits are non-empty."""
    keys = {split_key(e) for e in examples}
    vessels = sorted((k for k in keys if k.isdigit()), key=lambda m: _position(m, cfg.seed))
    # area facts follow their hash alone; the at-least-one-each rule below is about vessels
    areas = {k: ("eval" if _position(k, cfg.seed) < cfg.eval_share else "train") for k in keys if not k.isdigit()}
    if len(vessels) < 2:
        raise InputError(
            f"the dataset covers {len(vessels)} vessel(s); a split by MMSI needs at least 2 "
            "(simulate more vessels or ingest more data)"
        )
    n_eval = sum(_position(m, cfg.seed) < cfg.eval_share for m in vessels)
    n_eval = min(max(n_eval, 1), len(vessels) - 1)
    return {**{m: ("eval" if i < n_eval else "train") for i, m in enumerate(vessels)}, **areas}
