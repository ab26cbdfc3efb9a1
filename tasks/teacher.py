"""Teachers write the words around a computed fact: the question and the answer text.

The offline template teacher is the default: no key, no network. It varies its phrasing per
seed so an offline dataset is not monotonous. LLM teachers (distilabel) plug in behind the same
`generate(seed) -> Generation` call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from tasks.config import TeacherConfig
from tasks.seeds import Seed, read_seeds

SYSTEM_PROMPT = (
    "You are a maritime AIS analyst. Answer only from the AIS records in the message. "
    "State numbers with their units and times in UTC. If the records do not contain what is "
    "asked, say that the data is insufficient instead of guessing."
)
PROMPT_VERSION = "ais-template-v1"


@dataclass
class Generation:
    seed_id: str
    question: str
    answer: str
    teacher: str
    prompt_version: str
    # set only by the offline teacher when config teacher.corrupt_share planted a wrong value;
    # the validators never read it, the report uses it to measure how many the gate caught
    planted_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hhmm(iso: str) -> str:
    return pd.Timestamp(iso).strftime("%H:%M")


def _day(iso: str) -> str:
    return pd.Timestamp(iso).strftime("%Y-%m-%d")


def _who(seed: Seed, mmsi: int | None = None) -> str:
    mmsi = seed.asked_mmsi if mmsi is None else mmsi
    if mmsi == seed.mmsi and seed.vessel_name:
        return f"vessel {mmsi} ({seed.vessel_name})"
    return f"vessel {mmsi}"


QUESTIONS: dict[str, list[str]] = {
    "max_speed": [
        "What was the highest speed over ground reported by {who} between {start} and {end} UTC on {day}?",
        "How fast did {who} go at most between {start} and {end} UTC?",
        "From these reports, what is the maximum SOG of {who} in the window {start}-{end} UTC?",
        "Between {start} and {end} UTC on {day}, what top speed did {who} report?",
    ],
    "mean_speed": [
        "What was the average speed over ground of {who} between {start} and {end} UTC on {day}?",
        "Using the reports above, what mean speed did {who} keep from {start} to {end} UTC?",
        "Compute the mean SOG of {who} for {start}-{end} UTC.",
        "On average, how fast was {who} moving between {start} and {end} UTC?",
    ],
    "distance_run": [
        "How far did {who} travel between {start} and {end} UTC on {day}?",
        "What distance did {who} cover from {start} to {end} UTC, following its reported positions?",
        "Estimate the distance run by {who} in the window {start}-{end} UTC.",
        "Over {start}-{end} UTC, how many nautical miles did {who} sail?",
    ],
    "arrival": [
        "At which port did {who} stop, and when did it arrive?",
        "When did {who} arrive in port, and which port was it?",
        "Identify the port {who} called at and its arrival time.",
        "Where did {who} come to a stop, and at what time?",
    ],
    "departure": [
        "When did {who} leave port, and from which port?",
        "At what time did {who} depart, and which port was it leaving?",
        "From which port did {who} get underway, and when?",
        "Identify the port {who} departed from and the departure time.",
    ],
    "dwell": [
        "How long did {who} stay in port, and which port was it?",
        "What was the dwell time of {who} at the port in these reports?",
        "For how long was {who} stopped at the port, from arrival to departure?",
        "How much time did {who} spend in port during this call?",
    ],
}

ANSWERS: dict[str, list[str]] = {
    "max_speed": [
        "The highest speed over ground reported by {who} between {start} and {end} UTC was {max_sog_kn} knots.",
        "{Who} reached a maximum of {max_sog_kn} knots over ground in that window.",
    ],
    "mean_speed": [
        "Averaging the {n_speeds} available speed reports, {who} kept a mean speed over ground of {mean_sog_kn} knots between {start} and {end} UTC.",
        "{Who} averaged {mean_sog_kn} knots over ground from {start} to {end} UTC (mean of {n_speeds} speed reports).",
    ],
    "distance_run": [
        "Summing the great-circle distances of the {n_legs} legs between its {n_positions} reports, {who} covered {distance_nm} nautical miles between {start} and {end} UTC.",
        "{Who} ran {distance_nm} nautical miles from {start} to {end} UTC, adding up the distances between consecutive reported positions.",
    ],
    "arrival": [
        "{Who} stopped at {port_name} ({locode}); its first stopped report there is at {arrival} UTC.",
        "{Who} arrived at {port_name} ({locode}) at {arrival} UTC.",
    ],
    "departure": [
        "{Who} departed from {port_name} ({locode}); its last stopped report there is at {departure} UTC.",
        "{Who} left {port_name} ({locode}) at {departure} UTC.",
    ],
    "dwell": [
        "{Who} stayed at {port_name} ({locode}) from {arrival} to {departure} UTC, a dwell of {dwell_minutes} minutes (about {dwell_hours} hours).",
        "The call at {port_name} ({locode}) lasted {dwell_minutes} minutes, from arrival at {arrival} to departure at {departure} UTC.",
    ],
}

UNANSWERABLE = [
    "The records provided are for vessel {present} only; there are no reports from vessel {asked}, so the data is insufficient to answer.",
    "This cannot be determined from the data: the reports shown come from vessel {present}, not from vessel {asked}.",
    "There are no AIS records for vessel {asked} in the data given (only vessel {present} appears), so I cannot answer without guessing.",
]


class TemplateTeacher:
    """Offline teacher: fills phrasing templates with the computed values."""

    name = "template"

    def __init__(self, cfg: TeacherConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed

    def _rng(self, seed: Seed) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}|{seed.seed_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def _values(self, seed: Seed) -> dict[str, str]:
        who = _who(seed)
        values = {
            "who": who, "Who": who[0].upper() + who[1:],
            "start": _hhmm(seed.window_start), "end": _hhmm(seed.window_end), "day": _day(seed.window_start),
        }
        fact = seed.fact
        if not seed.answerable:
            return values
        if seed.form in ("max_speed", "mean_speed", "distance_run"):
            values |= {
                "max_sog_kn": f"{fact['max_sog_kn']:.1f}", "mean_sog_kn": f"{fact['mean_sog_kn']:.1f}",
                "distance_nm": f"{fact['distance_nm']:.1f}", "n_speeds": str(fact["n_speeds"]),
                "n_positions": str(fact["n_positions"]), "n_legs": str(fact["n_positions"] - 1),
            }
        else:
            values |= {
                "port_name": fact["port_name"], "locode": fact["locode"], "arrival": _hhmm(fact["arrival"]),
                "departure": _hhmm(fact["departure"]), "dwell_minutes": f"{fact['dwell_minutes']:.0f}",
                "dwell_hours": f"{fact['dwell_minutes'] / 60:.1f}",
            }
        return values

    def _plant_error(self, seed: Seed, values: dict[str, str], rng: np.random.Generator) -> str:
        """Mimic a sloppy LLM: one stated value off by 15-40 % (or 10-40 minutes)."""
        key = {"max_speed": "max_sog_kn", "mean_speed": "mean_sog_kn", "distance_run": "distance_nm",
               "arrival": "arrival", "departure": "departure", "dwell": "dwell_minutes"}[seed.form]
        if key in ("arrival", "departure"):
            shifted = pd.Timestamp(seed.fact[key]) + pd.Timedelta(minutes=int(rng.integers(10, 41)) * int(rng.choice([-1, 1])))
            values[key] = shifted.strftime("%H:%M")
        else:
            factor = 1 + float(rng.uniform(0.15, 0.4)) * float(rng.choice([-1, 1]))
            original = float(values[key])
            wrong = original * factor if original > 0.5 else original + float(rng.uniform(1.0, 3.0))
            values[key] = f"{wrong:.0f}" if key == "dwell_minutes" else f"{wrong:.1f}"
        return key

    def generate(self, seed: Seed) -> Generation:
        rng = self._rng(seed)
        values = self._values(seed)
        question = str(rng.choice(QUESTIONS[seed.form])).format(**values)
        planted = None
        if not seed.answerable:
            answer = str(rng.choice(UNANSWERABLE)).format(present=seed.mmsi, asked=seed.asked_mmsi)
        else:
            if rng.random() < self.cfg.corrupt_share:
                planted = self._plant_error(seed, values, rng)
            answer = str(rng.choice(ANSWERS[seed.form])).format(**values)
        return Generation(seed.seed_id, question, answer, f"{self.name}", PROMPT_VERSION, planted)


def build_teacher(cfg: TeacherConfig, seed: int) -> TemplateTeacher:
    if cfg.kind == "template":
        return TemplateTeacher(cfg, seed)
    raise NotImplementedError(cfg.kind)  # config validation rejects other kinds before this


def user_turn(seed: Seed, question: str) -> str:
    return f"{seed.context}\n\nQuestion: {question}"


def to_example(seed: Seed, gen: Generation, generation_seed: int) -> dict[str, Any]:
    """A chat-format example with its provenance (what a reader needs to re-run the fact)."""
    example_id = hashlib.sha1(f"{seed.seed_id}|{gen.teacher}|{gen.prompt_version}".encode()).hexdigest()[:16]
    return {
        "id": example_id,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_turn(seed, gen.question)},
            {"role": "assistant", "content": gen.answer},
        ],
        "question": gen.question,
        "answer": gen.answer,
        "category": seed.category,
        "difficulty": seed.difficulty,
        "form": seed.form,
        "answerable": seed.answerable,
        "mmsi": seed.mmsi,
        "asked_mmsi": seed.asked_mmsi,
        "vessel_name": seed.vessel_name,
        "vessel_type": seed.vessel_type,
        "window_start": seed.window_start,
        "window_end": seed.window_end,
        "seed_id": seed.seed_id,
        "fact_sql": seed.fact_sql,
        "fact_sql_digest": seed.fact_sql_digest,
        "fact_params": json.dumps(seed.fact_params, sort_keys=True),
        "fact": json.dumps(seed.fact, sort_keys=True),
        "grounding": json.dumps(seed.grounding),
        "source_hash": seed.source_hash,
        "teacher": gen.teacher,
        "prompt_version": gen.prompt_version,
        "generation_seed": generation_seed,
        "planted_error": gen.planted_error,
    }


def generate_examples(seeds_path: Path, cfg: TeacherConfig, generation_seed: int, out_path: Path) -> dict[str, Any]:
    seeds = read_seeds(seeds_path)
    teacher = build_teacher(cfg, generation_seed)
    out_path = Path(out_path)
    tmp = out_path.with_suffix(".tmp")
    planted = 0
    with open(tmp, "w") as fh:
        for seed in seeds:
            gen = teacher.generate(seed)
            planted += gen.planted_error is not None
            fh.write(json.dumps(to_example(seed, gen, generation_seed)) + "\n")
    tmp.replace(out_path)
    return {"generated": len(seeds), "teacher": teacher.name, "planted_errors": planted}


generate_task = task(name="generate-examples")(generate_examples)
