"""A fault-injecting LLM teacher for the grounding gate's tests.

`FaultInjector` is a LoopbackLLM responder: it answers every teacher prompt with the grounded
draft the prompt carries, and for a deterministic share of prompts corrupts ONE value in the
answer of one turn, the way a careless model does:

- number: a stated number moved beyond its unit's tolerance (off by 15-40 % or at least two
  display units, one digit changed, or swapped for another computed value of the same unit);
- name: the vessel's name, a port's name or UN/LOCODE, or an MMSI replaced by another real one
  from the data, or mutated (a letter or digit changed, added or dropped);
- time: an HH:MM time shifted by 10 to 40 minutes, or a date by 1 to 9 days.

What it corrupted is recorded under a key of the draft (`draft_key`), so a test can tell the
corrupted examples from the correct ones by regenerating the drafts.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import ValidateConfig
from tasks.llm.loopback import DRAFT_RE
from tasks.validate import TOLERANCE_KINDS, unit_tolerance

VALUE_LINE_RE = re.compile(r"^- (?P<name>\S+) = (?P<value>.*) \[(?P<kind>\w+), (?:required|optional|must NOT be stated)\]$")
TIME_RE = re.compile(r"(?<![\d:])([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?![\d:])")
DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
MMSI_RE = re.compile(r"(?<![\d.])\d{9}(?![\d.])")
NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.(?P<decimals>\d+))?(?![\w]|\.\d)")
LOCODE_RE = re.compile(r"\b[A-Z]{2}[A-Z2-9]{3}\b")
KINDS = ("number", "name", "time")


def draft_key(turns: list[dict[str, Any]]) -> str:
    """The key a draft's corruption is recorded under: its turns (question, reasoning, answer)."""
    plain = [{k: t.get(k, "") for k in ("question", "reasoning", "answer")} for t in turns]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Corruption:
    kind: str        # number | name | time
    how: str         # scaled | digit | swapped | other_vessel_name | mutated_locode | shifted | shifted_date ...
    turn: int
    original: str
    corrupted: str
    units: tuple[str, ...] = ()  # a number: the units of the computed values it stated


def _computed_values(prompt: str) -> list[tuple[str, str, float]]:
    """(name, kind, value) of every numeric computed value the prompt lists."""
    out = []
    for line in prompt.splitlines():
        m = VALUE_LINE_RE.match(line.strip())
        if not m or m["kind"] not in TOLERANCE_KINDS:
            continue
        try:
            out.append((m["name"], m["kind"], float(m["value"])))
        except ValueError:
            continue
    return out


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for a, b in spans:
        chars[a:b] = "#" * (b - a)
    return "".join(chars)


def _mutate(word: str, rng: np.random.Generator, alphabet: str, substitute_only: bool = False) -> str:
    """One character of `word` changed, added or dropped (same case); never the same text."""
    positions = [i for i, c in enumerate(word) if c in alphabet or c.upper() in alphabet]
    while True:
        i = int(rng.choice(positions))
        how = 0 if substitute_only or len(positions) <= 3 else int(rng.integers(0, 3))
        pick = str(rng.choice(list(alphabet)))
        pick = pick if word[i].isupper() or not pick.isalpha() else pick.lower()
        if how == 0:
            out = word[:i] + pick + word[i + 1:]
        elif how == 1:
            out = word[:i] + pick + word[i:]
        else:
            out = word[:i] + word[i + 1:]
        if out.lower() != word.lower():
            return out


class FaultInjector:
    """LoopbackLLM responder: the prompt's draft, with one value corrupted in `share` of prompts.

    vessels: MMSI -> name of every vessel in the data (names may be None); ports: (name, locode)
    of every port in the port table. Corruptions are recorded in `records` by draft_key."""

    def __init__(self, share: float, vessels: dict[int, str | None], ports: list[tuple[str, str]], seed: int = 0,
                 cfg: ValidateConfig | None = None):
        self.share = share
        self.seed = seed
        self.cfg = cfg or ValidateConfig()
        self.mmsis = sorted(vessels)
        self.vessel_names = sorted({n for n in vessels.values() if n and re.search(r"[A-Za-z]{2}", n)})
        self.port_names = sorted({p for p, _ in ports})
        self.locodes = sorted({c for _, c in ports})
        self.records: dict[str, Corruption] = {}
        self.skipped: dict[str, str] = {}  # chosen for corruption, but the answer states nothing to corrupt
        self._lock = threading.Lock()

    def __call__(self, request: dict) -> str:
        prompt = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")
        match = DRAFT_RE.search(prompt)
        if not match:
            raise ValueError("the teacher prompt carries no <draft>")
        turns = json.loads(match.group(1))["turns"]
        key = draft_key(turns)
        rng = np.random.default_rng(int(hashlib.sha256(f"{self.seed}|{key}".encode()).hexdigest()[:16], 16))
        if rng.random() >= self.share:
            return match.group(1)
        corruption = self._corrupt(turns, prompt, rng)
        with self._lock:
            if corruption is None:
                self.skipped[key] = "nothing to corrupt"
            else:
                self.records[key] = corruption
        return json.dumps({"turns": turns}, ensure_ascii=False)

    # --- what an answer states ---------------------------------------------------------------

    def _name_spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, what) of every vessel name, port name, LOCODE and MMSI in the text."""
        found: list[tuple[int, int, str]] = []
        taken = np.zeros(len(text), dtype=bool)
        for what, names in (("vessel_name", self.vessel_names), ("port_name", self.port_names)):
            for name in sorted(names, key=len, reverse=True):
                for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
                    if not taken[m.start():m.end()].any():
                        taken[m.start():m.end()] = True
                        found.append((m.start(), m.end(), what))
        for m in LOCODE_RE.finditer(text):
            if m.group() in self.locodes and not taken[m.start():m.end()].any():
                taken[m.start():m.end()] = True
                found.append((m.start(), m.end(), "locode"))
        for m in MMSI_RE.finditer(text):
            if not taken[m.start():m.end()].any():
                taken[m.start():m.end()] = True
                found.append((m.start(), m.end(), "mmsi"))
        return sorted(found)

    def _candidates(self, text: str, values: list[tuple[str, str, float]]) -> dict[str, list[tuple[int, int, str]]]:
        names = self._name_spans(text)
        times = [(m.start(), m.end(), "time") for m in TIME_RE.finditer(text)]
        times += [(m.start(), m.end(), "date") for m in DATE_RE.finditer(text)]
        masked = _mask(text, [(a, b) for a, b, _ in names + times])
        numbers = []
        for m in NUMBER_RE.finditer(masked):
            n, half_digit = float(m.group()), 0.5 * 10 ** -len(m["decimals"] or "")
            kinds = [k for _, k, v in values if abs(n - v) <= unit_tolerance(k, self.cfg) + half_digit + 1e-9]
            if kinds:  # a number the draft states as a computed value
                numbers.append((m.start(), m.end(), "|".join(sorted(set(kinds)))))
        return {"number": numbers, "name": names, "time": times}

    # --- corrupting one value ------------------------------------------------------------------

    def _corrupt(self, turns: list[dict[str, Any]], prompt: str, rng: np.random.Generator) -> Corruption | None:
        values = _computed_values(prompt)
        options = []
        for t, turn in enumerate(turns):
            cands = self._candidates(turn["answer"], values)
            options += [(kind, t, c) for kind in KINDS for c in cands[kind]]
        if not options:
            return None
        kinds = sorted({o[0] for o in options}, key=KINDS.index)
        kind = kinds[int(rng.integers(0, len(kinds)))]
        picks = [o for o in options if o[0] == kind]
        _, t, (a, b, what) = picks[int(rng.integers(0, len(picks)))]
        text = turns[t]["answer"]
        original = text[a:b]
        if kind == "time" and what == "date":
            days = int(rng.integers(1, 10)) * int(rng.choice([-1, 1]))
            wrong, how = (pd.Timestamp(original) + pd.Timedelta(days=days)).strftime("%Y-%m-%d"), "shifted_date"
        elif kind == "time":
            wrong, how = self._shift(original, rng), "shifted"
        elif kind == "name":
            wrong, how = self._rename(original, what, rng, prompt)
        else:
            wrong, how = self._renumber(original, what.split("|"), values, rng)
        turns[t]["answer"] = text[:a] + wrong + text[b:]
        return Corruption(kind, how, t, original, wrong, tuple(what.split("|")) if kind == "number" else ())

    def _shift(self, hhmm: str, rng: np.random.Generator) -> str:
        parts = hhmm.split(":")
        minutes = int(parts[0]) * 60 + int(parts[1])
        minutes = (minutes + int(rng.integers(10, 41)) * int(rng.choice([-1, 1]))) % 1440
        out = f"{minutes // 60:02d}:{minutes % 60:02d}"
        return out + (f":{parts[2]}" if len(parts) == 3 else "")

    def _rename(self, original: str, what: str, rng: np.random.Generator, prompt: str) -> tuple[str, str]:
        mutate = rng.random() < 0.5
        if what == "mmsi":
            if mutate:
                return _mutate(original, rng, "0123456789", substitute_only=True), "mutated_mmsi"
            others = [m for m in self.mmsis if str(m) != original]
            return str(others[int(rng.integers(0, len(others)))]), "other_vessel_mmsi"
        if what == "locode":
            if mutate:
                return original[:2] + _mutate(original[2:], rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "mutated_locode"
            others = [c for c in self.locodes if c != original]
            return str(others[int(rng.integers(0, len(others)))]), "other_locode"
        if mutate:
            return _mutate(original, rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), f"mutated_{what}"
        pool = self.vessel_names if what == "vessel_name" else self.port_names
        # another name the records themselves show is the likeliest slip; else any real one
        in_context = [n for n in pool if n.lower() != original.lower() and re.search(rf"(?<!\w){re.escape(n)}(?!\w)", prompt)]
        others = in_context or [n for n in pool if n.lower() != original.lower()]
        return str(others[int(rng.integers(0, len(others)))]), f"other_{what}"

    def _renumber(self, original: str, kinds: list[str], values: list[tuple[str, str, float]],
                  rng: np.random.Generator) -> tuple[str, str]:
        decimals = len(original.partition(".")[2])
        unit = 10.0 ** -decimals
        x = float(original)
        # beyond the loosest tolerance the number could be read with, and beyond its rounding
        beyond = max(unit_tolerance(k, self.cfg) for k in kinds) + unit

        def fmt(v: float) -> str:
            return f"{v:.{decimals}f}"

        def wrong_enough(text: str) -> bool:
            return abs(float(text) - x) > beyond + 1e-9 and (not x >= 0 or float(text) >= 0)

        swaps = sorted({fmt(v) for _, k, v in values if k in kinds and wrong_enough(fmt(v))})
        how = ["scaled", "digit"] + (["swapped"] if swaps else [])
        pick = how[int(rng.integers(0, len(how)))]
        if pick == "swapped":
            return swaps[int(rng.integers(0, len(swaps)))], "swapped"
        if pick == "digit":
            digits = [i for i, c in enumerate(original) if c.isdigit()]
            for _ in range(20):
                i = int(rng.choice(digits))
                text = original[:i] + str(rng.choice([d for d in "0123456789" if d != original[i]])) + original[i + 1:]
                if (len(text.lstrip("-").split(".")[0]) == 1 or not text.lstrip("-").startswith("0")) and wrong_enough(text):
                    return text, "digit"
        step = max(abs(x) * float(rng.uniform(0.15, 0.4)), 2 * beyond)
        text = fmt(x + step if x <= step or rng.random() < 0.5 else x - step)
        return text, "scaled"
