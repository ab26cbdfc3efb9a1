"""Split by vessel: every example about one MMSI lands in the same split, so eval never
scores a vessel the student saw in training."""

from __future__ import annotations

import hashlib
from typing import Any

from tasks.config import SplitConfig


def assign_splits(examples: list[dict[str, Any]], cfg: SplitConfig) -> dict[str, str]:
    """MMSI -> 'train' | 'eval'. Vessels are ordered by a seeded hash and the first
    round(n * eval_share) go to eval (at least one, and at least one left for train)."""
    vessels = sorted({int(e["mmsi"]) for e in examples},
                     key=lambda m: hashlib.sha256(f"{cfg.seed}|{m}".encode()).hexdigest())
    if not vessels:
        return {}
    n_eval = min(max(1, round(len(vessels) * cfg.eval_share)), max(len(vessels) - 1, 0)) if len(vessels) > 1 else 0
    return {str(m): ("eval" if i < n_eval else "train") for i, m in enumerate(vessels)}
