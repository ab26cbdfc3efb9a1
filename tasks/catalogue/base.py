"""The question catalogue's building blocks: the Seed record, where a seed's context comes from,
and the registry every category module fills (question forms, seed builders, context renderers).

A category module (tasks/catalogue/<category>.py) registers:
- `Form`s: one per question form (its category, difficulty, question and answer phrasings, and the
  worked-reasoning lines the offline teacher writes before the answer);
- a builder `(CatalogueInputs) -> list[Seed]` that turns its facts into candidate seeds;
- context renderers by kind, when the track of one vessel is not the context its questions need.
Seeds whose ContextSpec is equal ask about the same records, so they can be chained into one
multi-turn dialogue.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.config import GenerateConfig
from tasks.geo import distance_nm

DIFFICULTIES = ("easy", "medium", "hard")


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

# Named sea areas for stratified sampling (lat_min, lat_max, lon_min, lon_max); first match wins.
# Anything outside them is labelled by its 10-degree cell, so other waters still stratify.
REGIONS: tuple[tuple[str, float, float, float, float], ...] = (
    ("Hawaii", 18.0, 23.5, -161.0, -154.0),
    ("Alaska", 51.0, 72.0, -180.0, -129.0),
    ("Great Lakes", 41.0, 49.5, -92.5, -75.8),
    ("Pacific coast", 30.0, 51.0, -130.0, -114.0),
    ("Gulf of Mexico", 18.0, 31.0, -98.0, -80.6),
    ("Atlantic coast", 24.0, 46.0, -82.0, -64.0),
    ("Caribbean", 9.0, 24.0, -90.0, -59.0),
)


def region_of(lat: float | None, lon: float | None) -> str:
    if lat is None or lon is None or pd.isna(lat) or pd.isna(lon):
        return "unknown"
    for name, la0, la1, lo0, lo1 in REGIONS:
        if la0 <= lat < la1 and lo0 <= lon < lo1:
            return name
    band = int(np.floor(lat / 10) * 10)
    meridian = int(np.floor(lon / 10) * 10)
    return f"cell {abs(band)}{'N' if band >= 0 else 'S'} {abs(meridian)}{'E' if meridian >= 0 else 'W'}"


@dataclass(frozen=True)
class ContextSpec:
    """Which records a seed's context holds; rendered only for the seeds that are sampled.

    kind "track" is one vessel's reports from start to end (ports near `ports_near` listed
    after them); other kinds are registered by category modules and read `extra`, a tuple of
    (key, value) pairs (hashable, so equal specs group seeds into dialogues)."""

    kind: str
    mmsi: int | None
    start: str
    end: str
    inclusive_end: bool = False
    ports_near: tuple[float, float] | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.extra).get(key, default)


@dataclass
class Seed:
    seed_id: str
    category: str
    difficulty: str
    form: str
    answerable: bool
    mmsi: int                      # the vessel whose records are in the context (0 for area questions)
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
    # values an answer may state: {name, value, kind, required[, role][, mmsi]}; kind picks the
    # tolerance; required ones must be stated; role says what plausibility may not bound:
    # "reported" (as the transponder sent it, or implied by reported positions: anomaly answers
    # state impossible values on purpose), "threshold" (a rule's parameter), "total" (summed over
    # several vessels or calls), "ahead" (a time ahead of the records, e.g. TCPA); a name entry's
    # mmsi is the vessel it names (default: the seed's vessel)
    grounding: list[dict[str, Any]] = field(default_factory=list)
    region: str = "unknown"
    # later turns of a multi-turn dialogue about the same records: {form, category, difficulty,
    # fact, grounding, fact_sql, source_hash}; the example's grounding marks each value's turn
    followups: list[dict[str, Any]] = field(default_factory=list)
    # what an unanswerable question asks about instead: {"kind": vessel|window|port, ...}
    unanswerable: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_id(*parts: Any) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def iso(ts: Any) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%S")


def text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def hhmm(value: Any) -> str:
    """A time as the answers write it: HH:MM (UTC)."""
    return pd.Timestamp(value).strftime("%H:%M")


def combined_hash(hashes: Any) -> str:
    """One md5 for a fact made of several rows' source hashes (order-independent)."""
    return hashlib.md5("".join(sorted(str(h) for h in hashes)).encode()).hexdigest()


def fmt_num(value: Any, digits: int) -> str:
    if value is None or pd.isna(value):
        return "NA"
    return f"{value:.{digits}f}"


def status_name(code: Any) -> str | None:
    if code is None or pd.isna(code):
        return None
    return NAV_STATUS.get(int(code), "reserved")


class Tracks:
    """Per-vessel staged positions, sliced by time without copying the whole table."""

    def __init__(self, positions: pd.DataFrame):
        self.positions = positions
        self.by_mmsi = {
            int(m): g.reset_index(drop=True) for m, g in positions.sort_values(["mmsi", "ts", "row_hash"]).groupby("mmsi")
        }

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

    @cached_property
    def days(self) -> set[str]:
        return {str(d) for d in pd.to_datetime(self.positions["ts"]).dt.strftime("%Y-%m-%d").unique()}


# columns of the staged positions the catalogue reads (renderers may use any of them)
POSITION_COLUMNS = ["mmsi", "ts", "lat", "lon", "sog_kn", "cog_deg", "heading_deg", "nav_status", "row_hash"]


def read_positions(path: Path, columns: list[str]) -> pd.DataFrame:
    """Staged positions (a parquet file or a folder of day files) with row_hash as its md5 hex text
    (32 characters). The files hold it as a UUID, which pandas would hold as Python uuid objects:
    about 20x slower to read and 5x slower to sort than text."""
    table = pq.read_table(path, columns=columns)
    if "row_hash" in table.column_names:
        i = table.schema.get_field_index("row_hash")
        table = table.set_column(i, "row_hash", hash_hex_array(table.column(i)))
    return table.to_pandas()


def hash_hex_array(column: pa.ChunkedArray) -> pa.Array:
    """A UUID column as the 32-character hex text of its 16 bytes (text already, from a store written
    before row_hash became a UUID, is returned as it is)."""
    values = column.combine_chunks()
    if not isinstance(values.type, pa.BaseExtensionType):
        return values
    raw = values.storage
    if raw.null_count:
        raise ValueError("row_hash has missing values; the staged positions are damaged, stage them again")
    text = memoryview(raw.buffers()[1])[raw.offset * 16:(raw.offset + len(raw)) * 16].hex()
    return pa.array([text[k:k + 32] for k in range(0, len(text), 32)], pa.string())


@dataclass
class CatalogueInputs:
    """What a seed builder or context renderer may read."""

    positions_path: Path
    tracks: Tracks
    ports: pd.DataFrame
    fact_paths: dict[str, Path]
    fact_params: dict[str, dict[str, Any]]
    fact_digests: dict[str, str]
    cfg: GenerateConfig
    _facts: dict[str, pd.DataFrame] = field(default_factory=dict)

    def fact(self, name: str) -> pd.DataFrame:
        """A fact table (read once); empty when this run did not compute it."""
        if name not in self._facts:
            path = self.fact_paths.get(name)
            self._facts[name] = pd.read_parquet(path) if path is not None and Path(path).exists() else pd.DataFrame()
        return self._facts[name]

    def region_at(self, mmsi: int, start: Any, end: Any) -> str:
        """The sea area of the vessel's first report in [start, end] (for stratified sampling)."""
        rows = self.tracks.window(mmsi, start, end, inclusive_end=True)
        if rows is None or rows.empty:
            return "unknown"
        return region_of(float(rows["lat"].iloc[0]), float(rows["lon"].iloc[0]))

    def particulars(self) -> dict[int, dict[str, Any]]:
        """Per-vessel static data (vessel_particulars fact) keyed by MMSI (built once)."""
        if "_particulars" not in self._facts:
            table = self.fact("vessel_particulars")
            self._facts["_particulars"] = {} if table.empty else {int(r["mmsi"]): r for r in table.to_dict("records")}
        return self._facts["_particulars"]


@dataclass(frozen=True)
class Form:
    """One question form: what it asks and how the offline teacher phrases it.

    Templates are str.format strings over the values `values(seed)` returns plus who / Who /
    start / end / day. `plant` names the value the offline teacher's corrupt_share may falsify,
    and how: "number" (off by 15-40 %), "time" (HH:MM shifted 10-40 min), "minutes" (whole)."""

    name: str
    category: str
    difficulty: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    values: Callable[[Seed], dict[str, str]]
    reasoning: tuple[str, ...] = ()
    plant: tuple[str, str] | None = None
    # what an unanswerable variant of this form may ask about instead: another vessel, another
    # day, another port. A flag question has none (the MMSI's MID answers it on any day); static
    # particulars do not change by day, so they take "vessel" only.
    unanswerable_kinds: tuple[str, ...] = ("vessel", "window", "port")


FORMS: dict[str, Form] = {}
BUILDERS: dict[str, Callable[[CatalogueInputs], list[Seed]]] = {}
RENDERERS: dict[str, Callable[[ContextSpec, Seed, CatalogueInputs, str], str]] = {}


def register_form(form: Form) -> Form:
    if form.difficulty not in DIFFICULTIES:
        raise ValueError(f"form {form.name}: difficulty {form.difficulty!r} not in {DIFFICULTIES}")
    if form.name in FORMS and FORMS[form.name] is not form:
        raise ValueError(f"question form {form.name!r} is registered twice ({FORMS[form.name].category}, {form.category})")
    FORMS[form.name] = form
    return form


def register_builder(category: str) -> Callable:
    def wrap(fn: Callable[[CatalogueInputs], list[Seed]]) -> Callable:
        BUILDERS[f"{category}:{fn.__name__}"] = fn
        return fn
    return wrap


def register_renderer(kind: str) -> Callable:
    def wrap(fn: Callable[[ContextSpec, Seed, CatalogueInputs, str], str]) -> Callable:
        RENDERERS[kind] = fn
        return fn
    return wrap


def nearby_ports(ports: pd.DataFrame, lat: float, lon: float, radius_nm: float) -> pd.DataFrame:
    nm = distance_nm(lat, lon, ports["lat"].to_numpy(), ports["lon"].to_numpy())
    return ports.assign(_nm=nm)[nm <= radius_nm].sort_values(["_nm", "locode"]).drop(columns="_nm")


def format_track(
    rows: pd.DataFrame, mmsi: int, name: str | None, vtype: str, fmt: str, ports: pd.DataFrame | None = None,
    rule: str | None = None,
) -> str:
    """One vessel's reports, one per line (table or JSON lines), then nearby ports and a rule if
    given. NA marks a value the transponder sent as not available."""
    day = pd.Timestamp(rows["ts"].iloc[0]).strftime("%Y-%m-%d")
    label = f"{name}, " if name else ""
    lines = [f"AIS position reports for vessel MMSI {mmsi} ({label}{vtype}), {day} UTC:"]
    lines += report_lines(rows, fmt, with_mmsi=False)
    if ports is not None and len(ports):
        lines.append("Ports nearby (name, UN/LOCODE, lat, lon):")
        for p in ports.itertuples(index=False):
            lines.append(f"{p.port_name}|{p.locode}|{p.lat:.4f}|{p.lon:.4f}")
    if rule:
        lines.append(rule)
    return "\n".join(lines)


def report_lines(rows: pd.DataFrame, fmt: str, with_mmsi: bool) -> list[str]:
    """Reports in the compact deployment format: `time|lat|lon|sog_kn|cog_deg|status` rows after a
    header (table) or one JSON object per report (jsonl); with_mmsi adds the vessel first."""
    import json

    lines = []
    if fmt == "table":
        lines.append(("mmsi|" if with_mmsi else "") + "time|lat|lon|sog_kn|cog_deg|status")
        for r in rows.itertuples(index=False):
            status = status_name(r.nav_status) or "NA"
            lines.append(
                (f"{int(r.mmsi)}|" if with_mmsi else "")
                + f"{pd.Timestamp(r.ts).strftime('%H:%M:%S')}|{r.lat:.5f}|{r.lon:.5f}|{fmt_num(r.sog_kn, 1)}|"
                f"{fmt_num(r.cog_deg, 1)}|{status}"
            )
    else:
        for r in rows.itertuples(index=False):
            record = {"mmsi": int(r.mmsi)} if with_mmsi else {}
            record |= {
                "time": pd.Timestamp(r.ts).strftime("%H:%M:%S"), "lat": round(r.lat, 5), "lon": round(r.lon, 5),
                "sog_kn": None if pd.isna(r.sog_kn) else round(r.sog_kn, 1),
                "cog_deg": None if pd.isna(r.cog_deg) else round(r.cog_deg, 1), "status": status_name(r.nav_status),
            }
            lines.append(json.dumps(record))
    return lines


@register_renderer("track")
def render_track(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    rows = inputs.tracks.window(spec.mmsi, spec.start, spec.end, spec.inclusive_end)
    nearby = None
    if spec.ports_near:
        nearby = nearby_ports(inputs.ports, *spec.ports_near, radius_nm=float(spec.get("ports_radius_nm", 10.0)))
    return format_track(rows, spec.mmsi, seed.vessel_name, seed.vessel_type, fmt, nearby, spec.get("rule"))


def render_context(spec: ContextSpec, seed: Seed, inputs: CatalogueInputs, fmt: str) -> str:
    try:
        renderer = RENDERERS[spec.kind]
    except KeyError:
        raise KeyError(f"no context renderer registered for kind {spec.kind!r}; known: {sorted(RENDERERS)}") from None
    return renderer(spec, seed, inputs, fmt)
