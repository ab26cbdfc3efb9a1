"""Seed questions: one per sampled fact, with the AIS records it needs as context.

A seed carries everything the teacher needs (question form, the computed values, the context
text) and everything a reader needs to re-run it (sql file, params, source-row hash).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from tasks.config import GenerateConfig
from tasks.errors import InputError
from tasks.geo import distance_nm
from tasks.ports import load_ports

# AIS ship-type codes (ITU-R M.1371 table 53) grouped the way users ask about them.
def vessel_type_name(code: Any) -> str:
    if code is None or pd.isna(code):
        return "unknown type"
    code = int(code)
    if code == 30:
        return "fishing"
    if code in (31, 32, 52):
        return "tug"
    if code in (36, 37):
        return "pleasure craft"
    if 60 <= code <= 69:
        return "passenger"
    if 70 <= code <= 79:
        return "cargo"
    if 80 <= code <= 89:
        return "tanker"
    return "other"


# AIS navigational status (ITU-R M.1371); 9-13 are reserved, 15 (undefined) is staged as NULL
NAV_STATUS = {
    0: "underway", 1: "at anchor", 2: "not under command", 3: "restricted manoeuvrability",
    4: "constrained by draught", 5: "moored", 6: "aground", 7: "fishing", 8: "sailing", 14: "ais-sart",
}

# question form -> (category, difficulty). Difficulty grows with the work needed to answer.
FORMS: dict[str, tuple[str, str]] = {
    "max_speed": ("movement", "easy"),
    "mean_speed": ("movement", "medium"),
    "distance_run": ("movement", "hard"),
    "arrival": ("port_activity", "easy"),
    "departure": ("port_activity", "medium"),
    "dwell": ("port_activity", "hard"),
}

PORT_CONTEXT_NM = 10.0  # ports listed beside a port-call context


@dataclass
class Seed:
    seed_id: str
    category: str
    difficulty: str
    form: str
    answerable: bool
    mmsi: int                      # the vessel whose records are in the context
    asked_mmsi: int                # the vessel the question asks about (differs when unanswerable)
    vessel_name: str | None
    vessel_type: str
    window_start: str
    window_end: str
    fact_sql: str
    fact_sql_digest: str
    fact_params: dict[str, Any]
    fact: dict[str, Any]
    source_hash: str
    context: Any                   # ContextSpec until rendered, then the text of the user-turn context
    n_context_records: int
    # values an answer may state; kind picks the tolerance; required ones must be stated
    grounding: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seed_id(*parts: Any) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _iso(ts: Any) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%S")


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _fmt(value: Any, digits: int) -> str:
    if value is None or pd.isna(value):
        return "NA"
    return f"{value:.{digits}f}"


def _status(code: Any) -> str | None:
    if code is None or pd.isna(code):
        return None
    return NAV_STATUS.get(int(code), "reserved")


def format_context(
    rows: pd.DataFrame, mmsi: int, name: str | None, vtype: str, fmt: str, ports: pd.DataFrame | None = None,
    port_rule: str | None = None,
) -> str:
    """The user-turn context: the vessel's reports, one per line, plus nearby ports and the
    port-call rule if given. NA marks a value the transponder sent as not available."""
    day = pd.Timestamp(rows["ts"].iloc[0]).strftime("%Y-%m-%d")
    label = f"{name}, " if name else ""
    lines = [f"AIS position reports for vessel MMSI {mmsi} ({label}{vtype}), {day} UTC:"]
    if fmt == "table":
        lines.append("time|lat|lon|sog_kn|cog_deg|status")
        for r in rows.itertuples(index=False):
            status = _status(r.nav_status) or "NA"
            lines.append(
                f"{pd.Timestamp(r.ts).strftime('%H:%M:%S')}|{r.lat:.5f}|{r.lon:.5f}|{_fmt(r.sog_kn, 1)}|"
                f"{_fmt(r.cog_deg, 1)}|{status}"
            )
    else:
        for r in rows.itertuples(index=False):
            status = _status(r.nav_status)
            lines.append(json.dumps({
                "time": pd.Timestamp(r.ts).strftime("%H:%M:%S"), "lat": round(r.lat, 5), "lon": round(r.lon, 5),
                "sog_kn": None if pd.isna(r.sog_kn) else round(r.sog_kn, 1),
                "cog_deg": None if pd.isna(r.cog_deg) else round(r.cog_deg, 1), "status": status,
            }))
    if ports is not None and len(ports):
        lines.append("Ports nearby (name, UN/LOCODE, lat, lon):")
        for p in ports.itertuples(index=False):
            lines.append(f"{p.port_name}|{p.locode}|{p.lat:.4f}|{p.lon:.4f}")
    if port_rule:
        lines.append(port_rule)
    return "\n".join(lines)


class _Tracks:
    """Per-vessel staged positions, sliced by time without copying the whole table."""

    def __init__(self, positions: pd.DataFrame):
        self.by_mmsi = {int(m): g.reset_index(drop=True) for m, g in positions.sort_values(["mmsi", "ts", "row_hash"]).groupby("mmsi")}

    def _bounds(self, mmsi: int, start: Any, end: Any, inclusive_end: bool) -> tuple[pd.DataFrame | None, int, int]:
        g = self.by_mmsi.get(int(mmsi))
        if g is None:
            return None, 0, 0
        ts = g["ts"].to_numpy()
        lo = np.searchsorted(ts, np.datetime64(pd.Timestamp(start)), side="left")
        hi = np.searchsorted(ts, np.datetime64(pd.Timestamp(end)), side="right" if inclusive_end else "left")
        return g, int(lo), int(hi)

    def window(self, mmsi: int, start: Any, end: Any, inclusive_end: bool = False) -> pd.DataFrame | None:
        g, lo, hi = self._bounds(mmsi, start, end, inclusive_end)
        return None if g is None else g.iloc[lo:hi]

    def count(self, mmsi: int, start: Any, end: Any, inclusive_end: bool = False) -> int:
        _, lo, hi = self._bounds(mmsi, start, end, inclusive_end)
        return hi - lo


@dataclass(frozen=True)
class ContextSpec:
    """Which records a seed's context holds; rendered only for the seeds that are sampled."""

    mmsi: int
    start: str
    end: str
    inclusive_end: bool
    ports_near: tuple[float, float] | None


def render_context(spec: ContextSpec, seed: "Seed", tracks: _Tracks, ports: pd.DataFrame, fmt: str) -> str:
    rows = tracks.window(spec.mmsi, spec.start, spec.end, spec.inclusive_end)
    nearby, rule = None, None
    if spec.ports_near:
        nearby = _nearby_ports(ports, *spec.ports_near)
        rule = (f"A port call runs from the first to the last report at or below "
                f"{seed.fact_params['stopped_max_sog_kn']:g} kn within {seed.fact_params['port_radius_nm']:g} nm of a port.")
    return format_context(rows, spec.mmsi, seed.vessel_name, seed.vessel_type, fmt, nearby, rule)


def _nearby_ports(ports: pd.DataFrame, lat: float, lon: float) -> pd.DataFrame:
    nm = distance_nm(lat, lon, ports["lat"].to_numpy(), ports["lon"].to_numpy())
    return ports.assign(_nm=nm)[nm <= PORT_CONTEXT_NM].sort_values(["_nm", "locode"]).drop(columns="_nm")


def movement_candidates(
    facts: pd.DataFrame, cfg: GenerateConfig, sql_digest: str, params: dict[str, Any]
) -> list[Seed]:
    seeds = []
    for f in facts.itertuples(index=False):
        if f.n_positions > cfg.max_context_records:
            continue
        vtype = vessel_type_name(f.vessel_type)
        context = ContextSpec(int(f.mmsi), _iso(f.window_start), _iso(f.window_end), False, None)
        base = [
            {"name": "mmsi", "value": int(f.mmsi), "kind": "id", "required": False},
            {"name": "window_start", "value": _iso(f.window_start), "kind": "time", "required": False},
            {"name": "window_end", "value": _iso(f.window_end), "kind": "time", "required": False},
        ]
        fact = {
            "n_positions": int(f.n_positions), "n_speeds": int(f.n_speeds),
            "mean_sog_kn": float(f.mean_sog_kn), "max_sog_kn": float(f.max_sog_kn),
            "distance_nm": float(f.distance_nm),
        }
        per_form = {
            "max_speed": [{"name": "max_sog_kn", "value": fact["max_sog_kn"], "kind": "speed_kn", "required": True}],
            "mean_speed": [
                {"name": "mean_sog_kn", "value": fact["mean_sog_kn"], "kind": "speed_kn", "required": True},
                {"name": "n_speeds", "value": fact["n_speeds"], "kind": "count", "required": False},
            ],
            "distance_run": [
                {"name": "distance_nm", "value": fact["distance_nm"], "kind": "distance_nm", "required": True},
                {"name": "n_positions", "value": fact["n_positions"], "kind": "count", "required": False},
                {"name": "n_legs", "value": fact["n_positions"] - 1, "kind": "count", "required": False},
            ],
        }
        for form, values in per_form.items():
            category, difficulty = FORMS[form]
            seeds.append(Seed(
                seed_id=_seed_id(form, f.mmsi, f.window_start, f.source_hash),
                category=category, difficulty=difficulty, form=form, answerable=True,
                mmsi=int(f.mmsi), asked_mmsi=int(f.mmsi), vessel_name=_text(f.vessel_name), vessel_type=vtype,
                window_start=_iso(f.window_start), window_end=_iso(f.window_end),
                fact_sql="sql/vessel_movement.sql", fact_sql_digest=sql_digest, fact_params=params,
                fact=fact, source_hash=f.source_hash, context=context, n_context_records=int(f.n_positions),
                grounding=base + values,
            ))
    return seeds


def port_call_candidates(
    calls: pd.DataFrame, tracks: _Tracks, ports: pd.DataFrame, cfg: GenerateConfig, sql_digest: str,
    params: dict[str, Any],
) -> list[Seed]:
    seeds = []
    margin = pd.Timedelta(minutes=30)
    for c in calls.itertuples(index=False):
        arrival, departure = pd.Timestamp(c.arrival), pd.Timestamp(c.departure)
        port = ports[ports["locode"] == c.locode].iloc[0]
        port_at = (float(port["lat"]), float(port["lon"]))
        vtype = vessel_type_name(c.vessel_type)
        fact = {
            "locode": c.locode, "port_name": c.port_name, "arrival": _iso(arrival), "departure": _iso(departure),
            "dwell_minutes": float(c.dwell_minutes),
        }
        port_values = [
            {"name": "mmsi", "value": int(c.mmsi), "kind": "id", "required": False},
            {"name": "locode", "value": c.locode, "kind": "entity", "required": True},
        ] + [  # nearby ports the context lists: naming one of them instead is a grounding error
            {"name": "other_port", "value": name, "kind": "distractor", "required": False}
            for name in _nearby_ports(ports, *port_at)["port_name"] if name != c.port_name
        ]
        windows = {}
        if not c.arrival_before_data:
            windows["arrival"] = (arrival - margin, arrival + margin, [
                {"name": "arrival", "value": _iso(arrival), "kind": "time", "required": True}])
        if not c.departure_after_data:
            windows["departure"] = (departure - margin, departure + margin, [
                {"name": "departure", "value": _iso(departure), "kind": "time", "required": True}])
        if not c.arrival_before_data and not c.departure_after_data:
            windows["dwell"] = (arrival - pd.Timedelta(minutes=10), departure + pd.Timedelta(minutes=10), [
                {"name": "dwell_minutes", "value": float(c.dwell_minutes), "kind": "minutes", "required": True},
                {"name": "dwell_hours", "value": float(c.dwell_minutes) / 60, "kind": "hours", "required": False},
                {"name": "arrival", "value": _iso(arrival), "kind": "time", "required": False},
                {"name": "departure", "value": _iso(departure), "kind": "time", "required": False},
            ])
        for form, (start, end, values) in windows.items():
            n_rows = tracks.count(c.mmsi, start, end, inclusive_end=True)
            if n_rows < 2 or n_rows > cfg.max_context_records:
                continue
            category, difficulty = FORMS[form]
            seeds.append(Seed(
                seed_id=_seed_id(form, c.mmsi, c.arrival, c.source_hash),
                category=category, difficulty=difficulty, form=form, answerable=True,
                mmsi=int(c.mmsi), asked_mmsi=int(c.mmsi), vessel_name=_text(c.vessel_name), vessel_type=vtype,
                window_start=_iso(start), window_end=_iso(end),
                fact_sql="sql/port_calls.sql", fact_sql_digest=sql_digest, fact_params=params,
                fact=fact, source_hash=c.source_hash,
                context=ContextSpec(int(c.mmsi), _iso(start), _iso(end), True, port_at),
                n_context_records=n_rows, grounding=port_values + values,
            ))
    return seeds


def _absent_mmsi(rng: np.random.Generator, present: set[int]) -> int:
    while True:
        candidate = int(rng.choice([338, 366, 367, 368, 369])) * 1_000_000 + int(rng.integers(0, 1_000_000))
        if candidate not in present:
            return candidate


def unanswerable_from(seed: Seed, absent_mmsi: int) -> Seed:
    """Same context, but the question asks about a vessel that is not in it."""
    grounding = [
        {"name": "asked_mmsi", "value": absent_mmsi, "kind": "id", "required": True},
        {"name": "mmsi", "value": seed.mmsi, "kind": "id", "required": False},
        {"name": "window_start", "value": seed.window_start, "kind": "time", "required": False},
        {"name": "window_end", "value": seed.window_end, "kind": "time", "required": False},
    ]
    return Seed(**{
        **{k: getattr(seed, k) for k in seed.__dataclass_fields__},
        "seed_id": _seed_id("unanswerable", seed.seed_id, absent_mmsi),
        "difficulty": "hard" if seed.difficulty == "hard" else "medium",
        "answerable": False, "asked_mmsi": absent_mmsi, "grounding": grounding,
        "fact": {"present_mmsi": seed.mmsi, "asked_mmsi": absent_mmsi, "reason": "vessel_not_in_context"},
    })


def sample_seeds(candidates: list[Seed], cfg: GenerateConfig, present_mmsi: set[int]) -> tuple[list[Seed], dict[str, Any]]:
    """Stratified sample: category shares from the config, forms equal within a category,
    then a share of unanswerable questions built on top."""
    rng = np.random.default_rng(cfg.seed)
    answerable_total = round(cfg.max_seeds * (1 - cfg.unanswerable_share))
    shares = {k: v for k, v in cfg.category_shares.items() if v > 0}
    total_share = sum(shares.values())
    by_form: dict[str, list[Seed]] = {}
    for s in sorted(candidates, key=lambda s: s.seed_id):
        by_form.setdefault(s.form, []).append(s)
    chosen: list[Seed] = []
    targets: dict[str, dict[str, int]] = {}
    for category, share in sorted(shares.items()):
        forms = sorted(f for f, (cat, _) in FORMS.items() if cat == category)
        per_form = round(answerable_total * share / total_share / max(len(forms), 1))
        for form in forms:
            pool = by_form.get(form, [])
            take = min(per_form, len(pool))
            idx = sorted(rng.choice(len(pool), size=take, replace=False)) if take else []
            chosen.extend(pool[i] for i in idx)
            targets[form] = {"target": per_form, "available": len(pool), "taken": take}
    n_unanswerable = round(len(chosen) * cfg.unanswerable_share / (1 - cfg.unanswerable_share)) if chosen else 0
    bases = [chosen[i] for i in sorted(rng.choice(len(chosen), size=n_unanswerable, replace=False))] if n_unanswerable else []
    chosen.extend(unanswerable_from(b, _absent_mmsi(rng, present_mmsi)) for b in bases)
    chosen.sort(key=lambda s: s.seed_id)
    stats = {"candidates": len(candidates), "seeds": len(chosen), "unanswerable": n_unanswerable, "forms": targets}
    return chosen, stats


def build_seeds(
    positions_path: Path, fact_paths: dict[str, Path], fact_params: dict[str, dict[str, Any]],
    fact_digests: dict[str, str], ports_path: Path | None, cfg: GenerateConfig, out_path: Path,
) -> dict[str, Any]:
    ports = load_ports(ports_path)
    positions = pd.read_parquet(positions_path, columns=["mmsi", "ts", "lat", "lon", "sog_kn", "cog_deg", "nav_status", "row_hash"])
    tracks = _Tracks(positions)
    movement = pd.read_parquet(fact_paths["vessel_movement"])
    calls = pd.read_parquet(fact_paths["port_calls"])
    candidates = movement_candidates(movement, cfg, fact_digests["vessel_movement"], fact_params["vessel_movement"])
    candidates += port_call_candidates(calls, tracks, ports, cfg, fact_digests["port_calls"], fact_params["port_calls"])
    if not candidates:
        raise InputError(
            f"no question can be asked of this data: {len(positions)} staged positions from {len(tracks.by_mmsi)} "
            f"vessels gave {len(movement)} movement windows and {len(calls)} port calls (windows need at least "
            "facts.min_window_positions reports of one vessel, at most generate.max_context_records); "
            "ingest more data, or lower facts.min_window_positions / facts.window_minutes"
        )
    seeds, stats = sample_seeds(candidates, cfg, set(tracks.by_mmsi))
    for s in seeds:
        s.context = render_context(s.context, s, tracks, ports, cfg.context_format)
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


seeds_task = task(name="build-seed-questions")(build_seeds)
