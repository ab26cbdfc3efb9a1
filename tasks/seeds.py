"""Seed questions: sampled from the catalogue's candidates, each with the AIS records it needs as
context.

A seed carries everything the teacher needs (question form, the computed values, the context
text) and everything a reader needs to re-run it (sql file, params, source-row hash). Sampling is
stratified: category shares and difficulty shares from the config, then round-robin over
question form x vessel type x region inside each category x difficulty cell, so no single
stratum crowds the others out. On top of that sample, a share of seeds become multi-turn
dialogues (follow-ups on the same records) and a share are unanswerable (a vessel, port or day
that is not in the data; the right answer says so).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from tasks.catalogue import BUILDERS, FORMS
from tasks.catalogue.base import (
    DIFFICULTIES, POSITION_COLUMNS, CatalogueInputs, ContextSpec, Seed, Tracks, read_positions, render_context, seed_id,
    vessel_type_name,
)
from tasks.config import GenerateConfig
from tasks.errors import InputError
from tasks.ports import load_ports

__all__ = ["Seed", "ContextSpec", "build_seeds", "read_seeds", "sample_seeds", "unanswerable_from", "vessel_type_name"]

UNANSWERABLE_KINDS = ("vessel", "window", "port")


def _absent_mmsi(rng: np.random.Generator, present: set[int]) -> int:
    """An MMSI not in the data, with a MID that is (so "foreign MID -> refuse" is no shortcut)."""
    mids = sorted({m // 1_000_000 for m in present if 200 <= m // 1_000_000 <= 799}) or [366, 367, 368, 369]
    while True:
        candidate = int(rng.choice(mids)) * 1_000_000 + int(rng.integers(0, 1_000_000))
        if candidate not in present:
            return candidate


def _absent_day(seed: Seed, days: set[str], rng: np.random.Generator) -> str:
    """A day 2-29 days before the data's first day or after its last: never one the data covers."""
    first, last = pd.Timestamp(min(days)), pd.Timestamp(max(days))
    shift = pd.Timedelta(days=int(rng.integers(2, 30)))
    day = first - shift if rng.random() < 0.5 else last + shift
    return day.strftime("%Y-%m-%d")


def unanswerable_from(seed: Seed, absent_mmsi: int, kind: str = "vessel", absent_day: str | None = None,
                      absent_port: tuple[str, str] | None = None) -> Seed:
    """Same context, but the question asks about something that is not in it:
    vessel: another MMSI; window: the same vessel on a day the data does not cover;
    port: a port the vessel's records do not visit."""
    base = [
        {"name": "mmsi", "value": seed.mmsi, "kind": "id", "required": False},
        {"name": "window_start", "value": seed.window_start, "kind": "time", "required": False},
        {"name": "window_end", "value": seed.window_end, "kind": "time", "required": False},
    ]
    fact: dict[str, Any] = {"present_mmsi": seed.mmsi, "reason": f"{kind}_not_in_context"}
    asked_mmsi = seed.mmsi
    if kind == "vessel":
        asked_mmsi = absent_mmsi
        grounding = [{"name": "asked_mmsi", "value": absent_mmsi, "kind": "id", "required": True}] + base
        fact["asked_mmsi"] = absent_mmsi
    elif kind == "window":
        assert absent_day is not None
        asked_start = absent_day + seed.window_start[10:]
        # the window keeps its length: one that closes at the next midnight ends on the next day
        shift = pd.Timestamp(absent_day) - pd.Timestamp(seed.window_start[:10])
        asked_end = (pd.Timestamp(seed.window_end) + shift).isoformat()
        grounding = [
            {"name": "asked_mmsi", "value": seed.mmsi, "kind": "id", "required": False},
            {"name": "asked_start", "value": asked_start, "kind": "time", "required": False},
            {"name": "asked_end", "value": asked_end, "kind": "time", "required": False},
            {"name": "asked_day", "value": absent_day, "kind": "date", "required": True},
        ] + base
        fact |= {"asked_mmsi": seed.mmsi, "asked_day": absent_day, "asked_start": asked_start, "asked_end": asked_end}
    elif kind == "port":
        assert absent_port is not None
        grounding = [
            {"name": "asked_mmsi", "value": seed.mmsi, "kind": "id", "required": False},
            {"name": "asked_port", "value": absent_port[1], "kind": "entity", "required": True},
        ] + base
        fact |= {"asked_mmsi": seed.mmsi, "asked_port_name": absent_port[0], "asked_locode": absent_port[1]}
    else:
        raise ValueError(f"unknown unanswerable kind {kind!r}; known: {UNANSWERABLE_KINDS}")
    return replace(
        seed, seed_id=seed_id("unanswerable", kind, seed.seed_id, absent_mmsi, absent_day, absent_port),
        difficulty="hard" if seed.difficulty == "hard" else "medium", answerable=False, asked_mmsi=asked_mmsi,
        grounding=grounding, fact=fact, followups=[], unanswerable={"kind": kind},
    )


def _absent_ports(seed: Seed, ports: pd.DataFrame | None) -> pd.DataFrame:
    """Ports neither asked about nor listed in the seed's context (an empty frame when none)."""
    if ports is None:
        return pd.DataFrame(columns=["port_name", "locode"])
    named = {g["value"] for g in seed.grounding if g["kind"] in ("entity", "distractor")}
    return ports[~ports["locode"].isin(named) & ~ports["port_name"].isin(named)]


T = TypeVar("T")


def round_robin(pool: list[T], n: int, rng: np.random.Generator, stratum: Callable[[T], tuple]) -> list[T]:
    """n seeds spread evenly over the strata `stratum` gives (AIS: form x vessel type x region;
    documents: form x source file): shuffle each stratum, then take one from each in turn."""
    strata: dict[tuple, list[T]] = defaultdict(list)
    for s in pool:
        strata[stratum(s)].append(s)
    queues = [[strata[k][i] for i in rng.permutation(len(strata[k]))] for k in sorted(strata)]
    rng.shuffle(queues)
    taken: list[T] = []
    depth = 0
    while len(taken) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(taken) < n:
                taken.append(q[depth])
        depth += 1
    return taken


def apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Largest-remainder apportionment: the parts sum to total exactly."""
    weight = sum(shares.values())
    exact = {k: total * v / weight for k, v in shares.items()}
    parts = {k: int(np.floor(x)) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (parts[k] - exact[k], k))[: total - sum(parts.values())]:
        parts[k] += 1
    return parts


def _followup(seed: Seed) -> dict[str, Any]:
    return {k: getattr(seed, k) for k in ("form", "category", "difficulty", "fact", "grounding", "fact_sql",
                                          "fact_sql_digest", "fact_params", "source_hash", "seed_id")}


def sample_seeds(
    candidates: list[Seed], cfg: GenerateConfig, present_mmsi: set[int], days: set[str] | None = None,
    ports: pd.DataFrame | None = None,
) -> tuple[list[Seed], dict[str, Any]]:
    """Stratified sample: category shares, then difficulty shares, then round-robin over
    form x vessel type x region; dialogues and unanswerable questions built on top."""
    rng = np.random.default_rng(cfg.seed)
    n_unanswerable_target = round(cfg.max_seeds * cfg.unanswerable_share)
    answerable_total = cfg.max_seeds - n_unanswerable_target
    shares = {k: v for k, v in cfg.category_shares.items() if v > 0}
    cells: dict[tuple[str, str], list[Seed]] = defaultdict(list)
    for s in sorted(candidates, key=lambda s: s.seed_id):
        cells[(s.category, s.difficulty)].append(s)

    chosen: list[Seed] = []
    targets: dict[str, Any] = {}
    for category, n_cat in sorted(apportion(answerable_total, shares).items()):
        levels = {d: cfg.difficulty_shares.get(d, 0) for d in DIFFICULTIES if cells.get((category, d))}
        levels = {d: w for d, w in levels.items() if w > 0}
        per_level = apportion(n_cat, levels) if levels else {}
        taken_cat = 0
        for difficulty, n in sorted(per_level.items()):
            pool = cells[(category, difficulty)]
            take = round_robin(pool, n, rng, lambda s: (s.form, s.vessel_type, s.region))
            chosen.extend(take)
            taken_cat += len(take)
            targets[f"{category}/{difficulty}"] = {"target": n, "available": len(pool), "taken": len(take)}
        targets[category] = {"target": n_cat, "taken": taken_cat}

    # dialogues: a seed whose records also answer other forms gets up to max_followups of them
    by_context: dict[ContextSpec, list[Seed]] = defaultdict(list)
    for s in candidates:
        by_context[s.context].append(s)
    # the share is of all seeds, unanswerable ones (single-turn) included
    n_dialogues = round(len(chosen) / (1 - cfg.unanswerable_share) * cfg.multi_turn_share)
    can_chain = [s for s in chosen if len({o.form for o in by_context[s.context]} - {s.form}) > 0]
    dialogues = 0
    if n_dialogues and can_chain:
        for i in sorted(rng.choice(len(can_chain), size=min(n_dialogues, len(can_chain)), replace=False)):
            s = can_chain[i]
            others = sorted({o.form: o for o in by_context[s.context] if o.form != s.form}.values(), key=lambda o: o.form)
            k = int(rng.integers(1, min(cfg.max_followups, len(others)) + 1))
            picked = [others[i] for i in rng.choice(len(others), size=k, replace=False)]
            # asked in order of difficulty, as a user digs deeper
            s.followups = [_followup(o) for o in sorted(picked, key=lambda o: (DIFFICULTIES.index(o.difficulty), o.form))]
            dialogues += 1

    # unanswerable: built on answerable single-turn seeds, kinds spread evenly where they apply
    def applicable_kinds(b: Seed) -> list[str]:
        allowed = FORMS[b.form].unanswerable_kinds  # e.g. a flag question: the MMSI itself answers it
        kinds = []
        if b.mmsi and "vessel" in allowed:
            kinds.append("vessel")
        if days and "window" in allowed:
            kinds.append("window")
        if b.mmsi and "port" in allowed and b.category == "port_activity" and len(_absent_ports(b, ports)):
            kinds.append("port")
        return kinds

    n_unanswerable = round(len(chosen) * cfg.unanswerable_share / (1 - cfg.unanswerable_share)) if chosen else 0
    bases = [s for s in chosen if not s.followups and applicable_kinds(s)]
    made: list[Seed] = []
    kinds_made: dict[str, int] = defaultdict(int)
    if n_unanswerable and bases:
        picks = sorted(rng.choice(len(bases), size=min(n_unanswerable, len(bases)), replace=False))
        for j, i in enumerate(picks):
            b = bases[i]
            applicable = applicable_kinds(b)
            kind = applicable[j % len(applicable)]
            absent_port = None
            if kind == "port":
                pool = _absent_ports(b, ports)
                row = pool.iloc[int(rng.integers(0, len(pool)))]
                absent_port = (str(row["port_name"]), str(row["locode"]))
            made.append(unanswerable_from(
                b, _absent_mmsi(rng, present_mmsi), kind,
                absent_day=_absent_day(b, days or set(), rng) if kind == "window" else None, absent_port=absent_port,
            ))
            kinds_made[kind] += 1
    chosen.extend(made)
    chosen.sort(key=lambda s: s.seed_id)
    stats = {
        "shares": share_report(chosen, cfg),  # chosen now holds the unanswerable seeds too
        "candidates": len(candidates), "seeds": len(chosen), "unanswerable": len(made),
        "unanswerable_kinds": dict(sorted(kinds_made.items())), "dialogues": dialogues, "targets": targets,
        "candidates_per_form": dict(sorted(pd.Series([s.form for s in candidates]).value_counts().items())) if candidates else {},
    }
    return chosen, stats


def actual_shares(items: list[Any]) -> dict[str, dict[str, float]]:
    """Shares per category and difficulty (of answerable items), unanswerable and multi-turn (of
    all), for seeds or published examples (dicts with `turns`)."""

    def get(s: Any, key: str) -> Any:
        return s[key] if isinstance(s, dict) else getattr(s, key)

    def dialogue(s: Any) -> bool:
        return int(s.get("turns", 1)) > 1 if isinstance(s, dict) else bool(s.followups)

    answerable = [s for s in items if get(s, "answerable")]
    out: dict[str, dict[str, float]] = {}
    for dim in ("category", "difficulty"):
        counts = Counter(get(s, dim) for s in answerable)
        out[dim] = {k: round(v / (len(answerable) or 1), 4) for k, v in counts.items()}
    n = len(items) or 1
    out["kind"] = {"unanswerable": round(sum(not get(s, "answerable") for s in items) / n, 4),
                   "multi_turn": round(sum(dialogue(s) for s in items) / n, 4)}
    return out


def share_report(seeds: list[Any], cfg: GenerateConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Target and actual shares per category, difficulty, unanswerable and multi-turn."""
    cat_total = sum(v for v in cfg.category_shares.values() if v > 0)
    diff_total = sum(cfg.difficulty_shares.values())
    targets = {
        "category": {c: v / cat_total for c, v in sorted(cfg.category_shares.items()) if v > 0},
        "difficulty": {d: cfg.difficulty_shares.get(d, 0) / diff_total for d in DIFFICULTIES},
        "kind": {"unanswerable": cfg.unanswerable_share, "multi_turn": cfg.multi_turn_share},
    }
    actual = actual_shares(seeds)
    return {
        dim: {key: {"target": round(t, 4), "actual": actual[dim].get(key, 0.0),
                    "within_tolerance": abs(actual[dim].get(key, 0.0) - t) <= cfg.share_tolerance + 1e-9}
              for key, t in table.items()}
        for dim, table in targets.items()
    }


def build_seeds(
    positions_path: Path, fact_paths: dict[str, Path], fact_params: dict[str, dict[str, Any]],
    fact_digests: dict[str, str], ports_path: Path | None, cfg: GenerateConfig, out_path: Path,
) -> dict[str, Any]:
    ports = load_ports(ports_path)
    positions = read_positions(positions_path, POSITION_COLUMNS)
    tracks = Tracks(positions)
    inputs = CatalogueInputs(Path(positions_path), tracks, ports, dict(fact_paths), fact_params, fact_digests, cfg)
    candidates: list[Seed] = []
    per_builder: dict[str, int] = {}
    for name, builder in sorted(BUILDERS.items()):
        if cfg.category_shares.get(name.split(":")[0], 0) <= 0:
            continue
        made = builder(inputs)
        per_builder[name] = len(made)
        candidates += made
    if not candidates:
        raise InputError(
            f"no question can be asked of this data: {len(positions)} staged positions from {len(tracks.by_mmsi)} "
            f"vessels gave no candidate seed ({per_builder}); facts need at least facts.min_window_positions "
            "reports of one vessel and contexts at most generate.max_context_records records; "
            "ingest more data, or lower facts.min_window_positions / facts.window_minutes"
        )
    unknown = sorted({s.form for s in candidates} - set(FORMS))
    if unknown:
        raise RuntimeError(f"catalogue builders made seeds of unregistered forms {unknown}")
    seeds, stats = sample_seeds(candidates, cfg, set(tracks.by_mmsi), tracks.days, ports)
    for s in seeds:
        s.context = render_context(s.context, s, inputs, cfg.context_format)
    stats["per_builder"] = per_builder
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for s in seeds:
            fh.write(json.dumps(s.to_dict(), default=str) + "\n")
    tmp.replace(out_path)
    return stats


def read_seeds(path: Path) -> list[Seed]:
    with open(path) as fh:
        return [Seed(**json.loads(line)) for line in fh if line.strip()]
