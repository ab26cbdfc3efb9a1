"""Validators of the quality gate: each example gets keep/drop with a machine-readable reason, in
order schema -> grounding -> plausibility -> triviality; rejected examples go to quarantine with the
reason of the first validator that dropped them, nothing is dropped silently.

Grounding: every number, time, date, MMSI, name and port in the assistant's turns must equal a
computed value of the example's fact within the tolerance for its unit, and every required value
must be stated. How a stated value is bound to a computed one:
- a number followed by a unit word is only compared with values of that unit; a count followed by
  its noun ("3 vessels", "12 reports") only with counts whose grounding name says what they count;
- the tolerance is the unit's, but never looser than half the last digit written: "12.3 kn" may be
  12.25-12.35, "33.70012" must be that latitude to the fifth decimal, "14:17:54" that second;
- a latitude written next to a longitude must be one of the fact's positions (a pair, not two
  coordinates of different positions); hemisphere letters (33.7° N, 118.2° W) give the sign;
- each required value needs its own statement: two required values of 1 vessel need two "1"s;
- names: a name that resembles an allowed name without being it (a typo), an upper-case name
  that is not an allowed one, another vessel's or port's name known to the run, a name put next to
  an MMSI it does not belong to, or next to a UN/LOCODE of another port, is `ungrounded_name`.
The question may only name the vessel and window the fact is about. An unanswerable question's
answer must say the data is insufficient and state no value beyond the identifiers and window.

Plausibility: the computed values the example carries must be physically possible for the vessel
type (speeds, positions, durations, distances). Values the grounding marks with a `role` are
exempt where the role says so: "reported" (as the transponder sent it, or implied by reported
positions: anomaly forms state impossible values on purpose), "threshold" (a rule's parameter),
"total" (summed over several vessels or calls), "ahead" (a time ahead of the records: TCPA).

Triviality: the answer must not already be spelled out in the question (the question text, not
the AIS records): its text contained in the question, or every required value stated there.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from tasks.anomalies import read_vessel_type_max_speed
from tasks.artifacts import quarantine_row, read_jsonl, write_jsonl, write_quarantine
from tasks.catalogue.base import vessel_type_name
from tasks.config import ValidateConfig
from tasks.documents import is_document

TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?:\s*([ap])\.?\s?m\b\.?)?", re.IGNORECASE)
DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
LOCODE_RE = re.compile(r"\b[A-Z]{2}[A-Z2-9]{3}\b")
MMSI_RE = re.compile(r"(?<![\d.])\d{9}(?![\d.])")
# a coordinate with its hemisphere letter: 33.70012° N, 118.2 W
HEMISPHERE_RE = re.compile(r"(?<![\w.])(?P<num>\d{1,3}(?:\.\d+)?)\s*°?\s*(?P<hemi>[NSEW])\b")
# a number (thousands "1,234", decimal point or decimal comma) and the unit word after it, if any
NUMBER_RE = re.compile(
    r"(?<![\w.,])(?P<num>-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:[.,]\d+)?)(?![\d])"
    r"\s*(?P<unit>knots?|kts?|kn|nautical\s+miles?|nmi|nm|minutes?|mins?|hours?|hrs?|h|"
    r"(?:speed\s+|position\s+)?reports?|legs?|positions?|degrees?|deg|°|vessels?|ships?|pairs?|encounters?|"
    r"calls?|days?|metres?|meters?|m|(?:major\s+)?course\s+changes?|turns?|alterations?)?(?![a-z])",
    re.IGNORECASE,
)
UNIT_KINDS = {
    "kn": "speed_kn", "kt": "speed_kn", "knot": "speed_kn",
    "nm": "distance_nm", "nmi": "distance_nm", "nautical": "distance_nm",
    "min": "minutes", "minute": "minutes",
    "h": "hours", "hr": "hours", "hour": "hours",
    "report": "count", "speed": "count", "position": "count", "leg": "count", "call": "count",
    "vessel": "count", "ship": "count", "pair": "count", "encounter": "count", "day": "count",
    "course": "count", "major": "count", "turn": "count", "alteration": "count",
    "degree": "degrees", "deg": "degrees", "°": "degrees",
    "metre": "metres", "meter": "metres", "m": "metres",
}
# what a count's noun may count: a count entry matches when its grounding name holds one of these
# (n_vessels, busiest_vessels, n_reports, n_speeds, n_legs, calls, major_course_changes, ...)
COUNT_NOUNS = {
    "vessel": ("vessel",), "ship": ("vessel",), "report": ("report", "position", "speed"),
    "position": ("position", "report"), "leg": ("leg",), "call": ("call",), "pair": ("pair",),
    "encounter": ("encounter",), "day": ("day",), "change": ("change",), "turn": ("change", "turn"),
    "alteration": ("change",),
}
# documents add their edge cases: "requires human review", "out of scope"
REFUSAL_RE = re.compile(
    r"insufficient|cannot be determined|cannot answer|no (?:ais )?(?:records|reports)|not in the data|not present"
    r"|human review|out of scope",
    re.IGNORECASE,
)
TOLERANCE_KINDS = ("speed_kn", "distance_nm", "minutes", "hours", "count", "id", "degrees", "metres", "number", "lat", "lon")
# upper-case words an answer may use that are not names (AIS field names and maritime acronyms)
ACRONYMS = frozenset({
    "AIS", "UTC", "GMT", "MMSI", "IMO", "MID", "ITU", "SOG", "COG", "CPA", "TCPA", "COLREG", "COLREGS",
    "NA", "N/A", "UN", "LOCODE", "UN/LOCODE", "ID", "GPS", "VHF", "ETA", "ETD", "NM", "KN", "KTS", "NOT", "NO",
    "OK", "US", "USA", "HH", "MM", "SS", "DR", "TSS", "VTS", "NMEA", "WGS", "WGS84",
})
# words that introduce a rule's threshold ("more than 45 degrees", "within the 0.5 nm limit"): a
# number that can only be a threshold must stand near one, and "<number> <unit> limit" must be one
LIMIT_WORDS = frozenset({
    "limit", "limits", "threshold", "than", "above", "below", "under", "over", "least", "most", "within", "inside",
    "outside", "beyond", "maximum", "minimum", "between", "exceed", "exceeds", "exceeding", "before", "rule",
    "plausible", "plausibly", "cutoff", "cut-off",
})
# a field name right before a number says which value it is: "MID 367", "IMO 9123456", "ship type 70"
FIELD_BEFORE_RE = re.compile(r"\b(MID|IMO|MMSI|code|type)\s*[:#]?\s*$")
LIMIT_AFTER_RE = re.compile(r"\s*(?:[\w-]+\s+)?limit\b", re.IGNORECASE)
# what plausibility calls a value of each unit in its reasons (implausible_<what>)
IMPLAUSIBLE = {"speed_kn": "speed", "minutes": "duration", "hours": "duration", "distance_nm": "distance"}
NAME_WORD_RE = re.compile(r"[\w'&]+")
NAME_SIMILARITY = 0.75  # a word run this close to an allowed name (but not it) is a misspelt name
GROUNDING_REASONS = (
    "question_off_fact", "unanswerable_question_off", "ungrounded_entity", "ungrounded_name", "ungrounded_time",
    "ungrounded_date", "ungrounded_number", "ungrounded_position", "unanswerable_not_refused", "missing_turn",
    "missing_required_value",
)


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class NumberClaim:
    value: float
    kind: str | None      # unit kind from the word after it (None: no unit word)
    noun: str | None      # what a count counts ("vessel", "report", ...)
    decimals: int         # digits written after the decimal mark
    start: int
    end: int


@dataclass(frozen=True)
class TimeClaim:
    minute: float         # minute of the day
    seconds: bool         # written to the second


@dataclass(frozen=True)
class Claims:
    """What a text states: times, dates, port codes, numbers with their unit kind."""

    times: list[TimeClaim]
    dates: list[str]
    codes: list[str]
    numbers: list[NumberClaim]


@dataclass(frozen=True)
class RunNames:
    """Vessel and port names the run's examples name: another example's name is a wrong one here.
    Looked up by word runs, so a run of thousands of vessels costs a set lookup per word run."""

    vessels: frozenset[str] = frozenset()
    ports: frozenset[str] = frozenset()

    @cached_property
    def _keys(self) -> tuple[dict[str, str], dict[str, str], int]:
        vessels = {" ".join(NAME_WORD_RE.findall(n)).lower(): n for n in self.vessels}  # vessel names: any case
        ports = {" ".join(NAME_WORD_RE.findall(n)): n for n in self.ports}  # port names: as written ("Mobile")
        longest = max((len(k.split()) for k in [*vessels, *ports]), default=0)
        return vessels, ports, longest

    def named_in(self, text: str) -> str | None:
        """The first known name the text contains, as "vessel X" / "port X"."""
        vessels, ports, longest = self._keys
        words = NAME_WORD_RE.findall(text)
        for i in range(len(words)):
            for n in range(1, min(longest, len(words) - i) + 1):
                run = " ".join(words[i:i + n])
                if run.lower() in vessels:
                    return f"vessel {vessels[run.lower()]!r}"
                if run in ports:
                    return f"port {ports[run]!r}"
        return None


# chat-template control tokens (ChatML and GPT's <|...|>, Llama's [INST] and <<SYS>>, Gemma's turns,
# <s>): a tokenizer reads them inside a message as turn boundaries, so a vessel name carrying one
# would forge a turn of the training chat
CHAT_MARKER_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>")
# C0 and C1 control characters and DEL, but tab, line feed and carriage return: a text field of an
# AIS message holds none, and a terminal or a tokenizer would act on them
CONTROL_CHAR_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_schema(example: dict[str, Any]) -> Verdict:
    messages = example.get("messages")
    if not isinstance(messages, list) or len(messages) < 3:
        return Verdict(False, "schema_messages", "messages must be a list of system, user, assistant turns")
    roles = tuple(m.get("role") for m in messages if isinstance(m, dict))
    if len(roles) != len(messages) or roles[0] != "system" or roles[-1] != "assistant":
        return Verdict(False, "schema_roles", f"roles {roles}")
    for a, b in zip(roles[1:], roles[2:]):
        if a == b:
            return Verdict(False, "schema_roles", f"two {a} turns in a row")
    for m in messages:
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return Verdict(False, "schema_empty_turn", f"empty {m.get('role')} turn")
    for m in messages:
        marker = CHAT_MARKER_RE.search(m["content"])
        if marker:
            return Verdict(False, "schema_chat_marker", f"the {m['role']} turn holds the chat-template marker {marker.group()!r}")
        control = CONTROL_CHAR_RE.search(m["content"])
        if control:
            return Verdict(False, "schema_control_character",
                           f"the {m['role']} turn holds control character U+{ord(control.group()):04X}")
    return Verdict(True)


# --- reading what a text states --------------------------------------------------------------

def _unit_kind(unit: str | None) -> str | None:
    if not unit:
        return None
    word = re.split(r"\s+", unit.lower())[0]
    word = word[:-1] if word.endswith("s") and word not in ("s",) else word
    return UNIT_KINDS.get(word)


def _noun(unit: str | None) -> str | None:
    if not unit:
        return None
    word = re.split(r"\s+", unit.lower())[-1]
    word = word[:-1] if word.endswith("s") else word
    return word if word in COUNT_NOUNS else None


def _number(text: str) -> float:
    if "," in text and "." not in text and not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+", text):
        return float(text.replace(",", "."))  # decimal comma: 12,3
    return float(text.replace(",", ""))


def _decimals(text: str) -> int:
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+", text):
        return 0
    return len(re.split(r"[.,]", text, maxsplit=1)[1]) if re.search(r"[.,]", text) else 0


def _without(text: str, names: list[str]) -> str:
    """The text with the known names blanked out (same length, so offsets stay)."""
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", lambda m: " " * len(m.group()), text, flags=re.IGNORECASE)
    return text


def extract_claims(text: str, names: list[str]) -> Claims:
    # names can hold digits ("EAGLE 2"): take the known ones out before reading numbers
    text = _without(text, names)
    times = []
    for h, m, s, ampm in TIME_RE.findall(text):
        hour = int(h)
        if ampm:
            hour = hour % 12 + (12 if ampm.lower() == "p" else 0)
        times.append(TimeClaim(hour * 60 + int(m) + (int(s) / 60 if s else 0), bool(s)))
    text = TIME_RE.sub(lambda m: " " * len(m.group()), text)
    dates = DATE_RE.findall(text)
    text = DATE_RE.sub(lambda m: " " * len(m.group()), text)
    codes = LOCODE_RE.findall(text)
    numbers = []
    for m in HEMISPHERE_RE.finditer(text):
        sign = -1.0 if m["hemi"] in "SW" else 1.0
        numbers.append(NumberClaim(sign * float(m["num"]), "lat" if m["hemi"] in "NS" else "lon", None,
                                   _decimals(m["num"]), m.start(), m.end()))
    text = HEMISPHERE_RE.sub(lambda m: " " * len(m.group()), text)
    for m in NUMBER_RE.finditer(text):
        numbers.append(NumberClaim(_number(m["num"]), _unit_kind(m["unit"]), _noun(m["unit"]), _decimals(m["num"]),
                                   m.start(), m.end()))
    return Claims(times, dates, codes, sorted(numbers, key=lambda n: n.start))


def minute_of_day(iso: str) -> float:
    ts = pd.Timestamp(iso)
    return ts.hour * 60 + ts.minute + ts.second / 60


def unit_tolerance(kind: str, cfg: ValidateConfig) -> float:
    """How far a stated value of this unit may be from the computed one (the fact's tolerance)."""
    return {
        "speed_kn": cfg.speed_tolerance_kn,
        "distance_nm": cfg.distance_tolerance_nm,
        "minutes": cfg.minutes_tolerance,
        "hours": 0.051,  # written with 1 decimal
        "count": 0.0,
        "id": 0.0,
        "degrees": 1.0,   # courses and bearings are written to the degree
        "metres": 0.51,   # dimensions are written to the metre
        "number": 0.051,  # any other value written with 1 decimal
        "lat": 0.00051,   # positions are written with 5 decimals; 3 (about 100 m) at the coarsest
        "lon": 0.00051,
    }[kind]


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _facts(example: dict[str, Any]) -> list[dict[str, Any]]:
    fact = _loads(example["fact"])
    return fact if isinstance(fact, list) else [fact]


def _ports_by_code(facts: list[dict[str, Any]]) -> dict[str, str]:
    """UN/LOCODE -> port name of the ports the facts name (locode/port_name, runner_locode/runner_name,
    asked_locode/asked_port_name)."""
    out = {}
    for f in facts:
        for key, code in f.items():
            if key.endswith("locode") and isinstance(code, str):
                name = f.get(key.replace("locode", "port_name")) or f.get(key.replace("locode", "name"))
                if isinstance(name, str):
                    out[code] = name
    return out


def run_names(examples: list[dict[str, Any]]) -> RunNames:
    """Every vessel and port name the examples of a run name."""
    vessels, ports = set(), set()
    for ex in examples:
        if isinstance(ex.get("vessel_name"), str):
            vessels.add(ex["vessel_name"])
        try:
            grounding, facts = _loads(ex["grounding"]), _facts(ex)
        except (KeyError, TypeError, ValueError):
            continue
        vessels |= {g["value"] for g in grounding if g["kind"] == "name" and isinstance(g["value"], str)
                    and ("mmsi" in g or g["name"] == "vessel_name")}
        ports |= set(_ports_by_code(facts).values())
        ports |= {g["value"] for g in grounding if g["name"] == "other_port" and isinstance(g["value"], str)}
    return RunNames(frozenset(vessels), frozenset(ports))


# --- names ------------------------------------------------------------------------------------

def _name_before(text: str, at: int) -> str:
    """The capitalised words just before offset `at` ("... left Long Beach (" -> "Long Beach")."""
    words = re.findall(r"[\w'&.-]+", text[max(0, at - 60):at])
    picked: list[str] = []
    for w in reversed(words):
        if not (w[0].isupper() or w[0].isdigit()) or w.upper() in ACRONYMS:
            break
        picked.insert(0, w)
        if len(picked) == 4:
            break
    while picked and picked[0][0].isdigit():
        picked.pop(0)
    return " ".join(picked)


def _same_name(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def _name_error(turn: str, allowed: list[str], labels: list[str], names_by_mmsi: dict[int, set[str]],
                ports_by_code: dict[str, str], known: RunNames) -> str | None:
    """Why a name in the turn is wrong, or None. allowed: the vessel, call-sign and port names the
    answer may use; labels: other grounded words (types, flags, situations)."""
    # a name next to an MMSI must be that vessel's: "vessel 366000001 (SEA STAR)", "SEA STAR (MMSI 366000001)"
    for m in re.finditer(r"(?<![\d.])(\d{9})\)?\s*\(\s*([^(),;]{2,60}?)\s*[,)]", turn):
        inside = m.group(2)
        # a broadcast name (capitals), not a field ("MID 366") or a description ("Cargo, 180 m")
        if re.match(r"[A-Z0-9'&. -]*[A-Z]{2}", inside) and inside.split()[0] not in ACRONYMS:
            if not any(_same_name(inside, own) for own in names_by_mmsi.get(int(m.group(1)), ())):
                return f"vessel {m.group(1)} is called {inside!r}, which is not its name"
    for m in re.finditer(r"\(\s*(?:MMSI\s*)?(\d{9})\s*[,)]", turn):
        before = _name_before(turn, m.start())
        owns = names_by_mmsi.get(int(m.group(1)), ())
        if before and re.search(r"[A-Z]{2}", before) and not any(before.lower().endswith(own.lower()) for own in owns):
            return f"{before!r} is not the name of vessel {m.group(1)}"
    # a port name next to a UN/LOCODE must be that port's: "Long Beach (USLGB)", "USLGB (Long Beach)"
    for m in re.finditer(r"\(\s*([A-Z]{2}[A-Z2-9]{3})\s*[,)]", turn):
        before, own = _name_before(turn, m.start()), ports_by_code.get(m.group(1))
        if own and before and not before.lower().endswith(own.lower()):
            return f"{before!r} is not the port {m.group(1)} ({own})"
    for m in re.finditer(r"\b([A-Z]{2}[A-Z2-9]{3})\s*\(\s*([A-Z][^(),;]{1,40}?)\s*[,)]", turn):
        own = ports_by_code.get(m.group(1))
        if own and not _same_name(m.group(2), own):
            return f"{m.group(2)!r} is not the port {m.group(1)} ({own})"
    rest = TIME_RE.sub(lambda m: " " * len(m.group()), _without(turn, allowed + labels))  # "7:42 PM" is a time
    # a misspelt allowed name: a run of words as long as the name, nearly equal to it, where the
    # allowed names themselves are already blanked out ("SOUTHBOUND 2" is not a typo of "NORTHBOUND")
    words = list(re.finditer(r"[\w&-]+", rest))
    for name in allowed:
        n_words = len(name.split())
        if len(re.findall(r"[A-Za-z]", name)) < 4:
            continue
        for i in range(len(words) - n_words + 1):
            run = rest[words[i].start():words[i + n_words - 1].end()]
            if abs(len(run) - len(name)) > 2 or not run[0].isupper():
                continue
            if difflib.SequenceMatcher(None, run.lower(), name.lower()).ratio() >= NAME_SIMILARITY:
                return f"{run!r} is not {name!r}"
    # another vessel's or port's name that the run knows (the allowed ones are blanked out of rest)
    other = known.named_in(rest)
    if other:
        return f"names {other}, which this fact is not about"
    # an upper-case name that is none of the allowed ones (vessel names are broadcast in capitals)
    for m in re.finditer(r"(?<![\w/])[A-Z][A-Z0-9'&/-]*[A-Z0-9](?![\w/])", rest):
        token = m.group()
        if len(re.findall(r"[A-Z]", token)) >= 2 and token not in ACRONYMS and not LOCODE_RE.fullmatch(token):
            return f"{token!r} is not a name in the records"
    return None


# --- grounding --------------------------------------------------------------------------------

def _number_tolerance(kind: str, claim: NumberClaim, cfg: ValidateConfig) -> float:
    """The unit's tolerance, never looser than half the last digit written (plus float slack)."""
    return min(unit_tolerance(kind, cfg), 0.5 * 10.0 ** -claim.decimals) + 1e-9 + 1e-9 * abs(claim.value)


def _number_ok(claim: NumberClaim, g: dict[str, Any], cfg: ValidateConfig) -> bool:
    if g["kind"] not in TOLERANCE_KINDS or g["value"] is None:
        return False
    if claim.kind is not None and g["kind"] != claim.kind:
        if not (claim.kind in ("lat", "lon") and g["kind"] == "number"):
            return False
    if claim.kind == "count" and claim.noun and not any(stem in g["name"] for stem in COUNT_NOUNS[claim.noun]):
        return False
    return abs(claim.value - float(g["value"])) <= _number_tolerance(g["kind"], claim, cfg)


def _time_ok(claim: TimeClaim, ref: float, cfg: ValidateConfig) -> bool:
    tol = min(cfg.minutes_tolerance, 1 / 60) if claim.seconds else cfg.minutes_tolerance
    diff = abs(claim.minute - ref) % 1440
    return min(diff, 1440 - diff) <= tol + 1e-6


def _days(grounding: list[dict[str, Any]]) -> set[str]:
    """The dates an answer may name: date values, and the days of time values, except a midnight
    that closes a window begun the day before (a day's window ends at 00:00 of the next)."""
    days = {str(g["value"])[:10] for g in grounding if g["kind"] == "date"}
    times = [pd.Timestamp(g["value"]) for g in grounding if g["kind"] == "time"]
    day = pd.Timedelta(days=1)
    days |= {t.strftime("%Y-%m-%d") for t in times if t != t.normalize() or not any(t - day <= o < t for o in times)}
    return days


def _unmatched(required: list[dict[str, Any]], claims: list[Any], ok: Callable[[Any, dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Required entries left without a statement of their own (each statement serves one entry):
    a maximum bipartite matching by augmenting paths; the lists are a handful long."""
    owner: dict[int, int] = {}

    def place(r: int, seen: set[int]) -> bool:
        for c, claim in enumerate(claims):
            if c in seen or not ok(claim, required[r]):
                continue
            seen.add(c)
            if c not in owner or place(owner[c], seen):
                owner[c] = r
                return True
        return False

    return [g for r, g in enumerate(required) if not place(r, set())]


def _position_error(text: str, numbers: list[NumberClaim], grounding: list[dict[str, Any]], cfg: ValidateConfig) -> str | None:
    """A latitude written next to a longitude must be one position of the fact."""
    lats = [g for g in grounding if g["kind"] == "lat"]
    lons = {g["name"]: g for g in grounding if g["kind"] == "lon"}
    if not lats:
        return None
    for a, b in zip(numbers, numbers[1:]):
        if not re.fullmatch(r"\s*[,/;]?\s*", text[a.end:b.start]):
            continue
        lat_hits = [g for g in lats if _number_ok(a, g, cfg)]
        lon_hits = [g for g in lons.values() if _number_ok(b, g, cfg)]
        if lat_hits and lon_hits and not any(
                lons.get(g["name"].replace("lat", "lon")) in lon_hits for g in lat_hits):
            return f"{text[a.start:a.end]}, {text[b.start:b.end]} is not one of the computed positions"
    return None


def _binding_error(text: str, numbers: list[NumberClaim], grounding: list[dict[str, Any]], cfg: ValidateConfig) -> str | None:
    """A number stated as another value than the one its words name: a rule's threshold stated as a
    computed value ("pass 0.5 nm apart" where 0.5 nm is only the close-quarters limit), a computed
    value stated as the limit ("the 0.08 nm limit"), or a number after a field name (MID, IMO,
    MMSI, code) that is not that field's value."""
    for n in numbers:
        hits = [g for g in grounding if _number_ok(n, g, cfg)]
        near = set(re.findall(r"[a-z-]+", text[max(0, n.start - 40):n.start].lower())[-4:]
                   + re.findall(r"[a-z-]+", text[n.end:n.end + 40].lower())[:4])
        written = text[n.start:n.end].strip()
        if hits and all(g.get("role") == "threshold" for g in hits) and not near & LIMIT_WORDS:
            return f"{written} is a rule's threshold ({hits[0]['name']}), not a computed value"
        if LIMIT_AFTER_RE.match(text, n.end) and hits and not any(g.get("role") == "threshold" for g in hits):
            return f"{written} is stated as the limit, but it is {hits[0]['name']}"
        field_name = FIELD_BEFORE_RE.search(text[max(0, n.start - 12):n.start])
        if field_name:
            named = [g for g in grounding if field_name.group(1).lower() in g["name"]]
            if named and not any(g in hits for g in named):
                return f"{field_name.group(1)} {written} is not the computed {named[0]['name']}"
    return None


def check_grounding(example: dict[str, Any], cfg: ValidateConfig, known: RunNames | None = None) -> Verdict:
    """The rules of the module docstring; known: the run's other vessel and port names. Document
    examples get the text grounding of tasks/documents/grounding.py instead."""
    if is_document(example):
        from tasks.documents.grounding import TextGrounding

        return TextGrounding(cfg).check(example)
    grounding = _loads(example["grounding"])
    facts = _facts(example)
    known = known or RunNames()
    ports_by_code = _ports_by_code(facts)
    vessel_names = [n for n in [example.get("vessel_name")] if isinstance(n, str)]
    # every name the example may use, taken out of a text before its numbers are read ("EAGLE 2")
    names = vessel_names + list(ports_by_code.values())
    names += [g["value"] for g in grounding if g["kind"] in ("name", "label") and isinstance(g["value"], str)]
    # names a vessel may be called by: the example's vessel its name (and name entries without an
    # mmsi: its call sign), another vessel the name entries that carry its MMSI
    names_by_mmsi: dict[int, set[str]] = {}
    for g in grounding:
        if g["kind"] == "name" and isinstance(g["value"], str) and (g.get("mmsi") or example.get("mmsi")):
            names_by_mmsi.setdefault(int(g.get("mmsi") or example["mmsi"]), set()).add(g["value"])
    if example.get("mmsi") and vessel_names:
        names_by_mmsi.setdefault(int(example["mmsi"]), set()).add(vessel_names[0])
    allowed_names = vessel_names + [g["value"] for g in grounding if g["kind"] == "name" and isinstance(g["value"], str)]
    allowed_names += list(ports_by_code.values())
    distractors = [g["value"] for g in grounding if g["kind"] == "distractor"]

    # the questions may only name the window and the vessels the fact is about
    user_turns = [m["content"] for m in example["messages"] if m["role"] == "user"]
    questions = [user_turns[0].rsplit("Question:", 1)[-1]] + user_turns[1:]
    asked = {int(g["value"]) for g in grounding if g["kind"] == "id"}
    if not example.get("answerable", True):
        asked = {int(g["value"]) for g in grounding if g["name"] == "asked_mmsi"}
    question_times = [minute_of_day(g["value"]) for g in grounding if g["kind"] == "time"]
    for question in questions:
        q = extract_claims(question, names)
        for t in q.times:
            if not any(_time_ok(t, ref, cfg) for ref in question_times):
                return Verdict(False, "question_off_fact", "the question names a time outside the fact's window")
        for mmsi in MMSI_RE.findall(question):
            if int(mmsi) not in asked:
                return Verdict(False, "question_off_fact", f"the question names vessel {mmsi}, not the fact's")

    if not example.get("answerable", True):
        # the question must ask about the absent vessel, day or port: a refusal to a question the
        # records do answer would teach the student to refuse answerable questions
        first = questions[0]
        for g in grounding:
            if g["name"] == "asked_mmsi" and g.get("required") and str(g["value"]) not in first:
                return Verdict(False, "unanswerable_question_off", f"the question does not name vessel {g['value']}")
            if g["name"] == "asked_day" and str(g["value"]) not in first:
                return Verdict(False, "unanswerable_question_off", f"the question does not name {g['value']}")
            if g["name"] == "asked_port" and str(g["value"]) not in first:
                return Verdict(False, "unanswerable_question_off", f"the question does not name port {g['value']}")

    assistant_turns = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
    claims = []
    for turn_index, turn in enumerate(assistant_turns):
        # each answer states values of its own turn's fact (a dialogue's grounding marks the turn)
        own = [g for g in grounding if int(g.get("turn", 0)) == turn_index]
        allowed_times = [minute_of_day(g["value"]) for g in own if g["kind"] == "time"]
        allowed_codes = {g["value"] for g in own if g["kind"] == "entity"}
        allowed_days = _days(own)
        numeric = [g for g in own if g["kind"] in TOLERANCE_KINDS]
        for d in distractors:
            if re.search(rf"(?<!\w){re.escape(d)}(?!\w)", turn, re.IGNORECASE) and not any(d in n for n in names):
                return Verdict(False, "ungrounded_entity", f"names {d}, which is not the computed value")
        wrong_name = _name_error(turn, allowed_names, names, names_by_mmsi, ports_by_code, known)
        if wrong_name:
            return Verdict(False, "ungrounded_name", wrong_name)
        c = extract_claims(turn, names)
        claims.append(c)
        for t in c.times:
            if not any(_time_ok(t, ref, cfg) for ref in allowed_times):
                shown = f"{int(t.minute) // 60:02d}:{int(t.minute) % 60:02d}"
                return Verdict(False, "ungrounded_time", f"{shown} matches no computed time")
        for d in c.dates:
            if d not in allowed_days:
                return Verdict(False, "ungrounded_date", d)
        for code in c.codes:
            if code not in allowed_codes:
                return Verdict(False, "ungrounded_entity", f"{code} is not a computed port")
        for n in c.numbers:
            if not any(_number_ok(n, g, cfg) for g in numeric):
                unit = f" {n.noun or n.kind}" if n.kind else ""
                return Verdict(False, "ungrounded_number", f"{n.value:g}{unit} matches no computed value")
        blanked = _without(turn, names)
        wrong_position = _position_error(blanked, c.numbers, numeric, cfg)
        if wrong_position:
            return Verdict(False, "ungrounded_position", wrong_position)
        wrong_binding = _binding_error(blanked, c.numbers, numeric, cfg)
        if wrong_binding:
            return Verdict(False, "ungrounded_number", wrong_binding)

    if not example.get("answerable", True) and not REFUSAL_RE.search(assistant_turns[-1]):
        return Verdict(False, "unanswerable_not_refused", "answer to an unanswerable question does not say the data is insufficient")

    asked_turns = {int(g.get("turn", 0)) for g in grounding if g.get("required")}
    if asked_turns and max(asked_turns) >= len(assistant_turns):
        return Verdict(False, "missing_turn", f"the dialogue has no answer for turn {max(asked_turns) + 1}")
    for turn_index, text in enumerate(assistant_turns):
        required = [g for g in grounding if g.get("required") and int(g.get("turn", 0)) == turn_index]
        missing = _missing(required, claims[turn_index], text, cfg)
        if missing is not None:
            where = f" (turn {turn_index + 1})" if len(assistant_turns) > 1 else ""
            return Verdict(False, "missing_required_value", f"answer does not state {missing['name']}{where}")
    return Verdict(True)


def _missing(required: list[dict[str, Any]], stated: Claims, text: str, cfg: ValidateConfig) -> dict[str, Any] | None:
    """The first required entry the text does not state (numbers and times: one statement each)."""
    for g in required:
        if g["kind"] == "entity" and g["value"] not in stated.codes:
            return g
        if g["kind"] == "date" and str(g["value"])[:10] not in text:
            return g
        if g["kind"] in ("label", "name") and not re.search(rf"(?<!\w){re.escape(str(g['value']))}(?!\w)", text, re.IGNORECASE):
            return g
    times = [g for g in required if g["kind"] == "time"]
    left = _unmatched(times, stated.times, lambda c, g: _time_ok(c, minute_of_day(g["value"]), cfg))
    if left:
        return left[0]
    numbers = [g for g in required if g["kind"] in TOLERANCE_KINDS]
    left = _unmatched(numbers, stated.numbers, lambda c, g: _number_ok(c, g, cfg))
    return left[0] if left else None


# --- plausibility -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def type_max_speeds() -> dict[str, float]:
    """Plausible maximum SOG (knots) per vessel type group, and "any" for the fastest type.

    From tasks/data/vessel_type_max_speed.csv (per AIS ship-type code; its sources and why the
    values are generous are in tasks/anomalies.py): a group takes the largest maximum of its codes
    (tug: towing 18, tug 20 -> 20; pleasure craft: sailing 25, pleasure 50 -> 50)."""
    table = read_vessel_type_max_speed()
    out: dict[str, float] = {}
    for row in table.itertuples(index=False):
        for code in range(int(row.type_from), int(row.type_to) + 1):
            group = vessel_type_name(code)
            out[group] = max(out.get(group, 0.0), float(row.max_sog_kn))
    out["any"] = float(table["max_sog_kn"].max())
    return out


def _speed_limit(example: dict[str, Any], grounding: list[dict[str, Any]]) -> tuple[float, str]:
    """The plausible maximum for the vessel the example is about; the fastest type's when it is
    about several vessels (their types are not in the example) or its type is unknown."""
    limits = type_max_speeds()
    vessels = {int(g["value"]) for g in grounding if g["kind"] == "id"}
    vtype = example.get("vessel_type")
    if example.get("mmsi") and vessels <= {int(example["mmsi"])} and vtype in limits:
        return limits[vtype], vtype
    return limits["any"], "any vessel"


def check_plausibility(example: dict[str, Any], cfg: ValidateConfig) -> Verdict:
    """Every computed value the example carries is physically possible (see the module docstring)."""
    grounding = _loads(example["grounding"])
    limit_kn, vtype = _speed_limit(example, grounding)
    window_min = (pd.Timestamp(example["window_end"]) - pd.Timestamp(example["window_start"])).total_seconds() / 60
    reach_nm = limit_kn * window_min / 60 * cfg.distance_margin
    for g in grounding:
        kind, role, value = g["kind"], g.get("role"), g["value"]
        if value is None or kind not in ("lat", "lon", "speed_kn", "minutes", "hours", "distance_nm"):
            continue
        value = float(value)
        if kind in ("lat", "lon"):  # even a reported position is a position on Earth
            if abs(value) > (90.0 if kind == "lat" else 180.0):
                return Verdict(False, "implausible_position", f"{g['name']} = {value:g} is not a {kind}itude")
            continue
        if role in ("reported", "threshold"):
            continue
        if value < 0:
            return Verdict(False, f"implausible_{IMPLAUSIBLE[kind]}", f"{g['name']} = {value:g} is negative")
        if kind == "speed_kn" and value > limit_kn + cfg.speed_tolerance_kn:
            return Verdict(False, "implausible_speed", f"{g['name']} = {value:.1f} kn, above the {limit_kn:g} kn a {vtype} can make")
        minutes = value * 60 if kind == "hours" else value
        if kind in ("minutes", "hours") and role != "total":
            bound, what = (1440.0, "a day") if role == "ahead" else (window_min, f"the {window_min:.0f}-minute window")
            if minutes > bound + cfg.minutes_tolerance:
                return Verdict(False, "implausible_duration", f"{g['name']} = {minutes:.0f} min, longer than {what}")
        if kind == "distance_nm" and role != "total" and value > reach_nm + cfg.distance_tolerance_nm:
            return Verdict(False, "implausible_distance",
                           f"{g['name']} = {value:.1f} nm, more than a {vtype} covers in {window_min:.0f} min at {limit_kn:g} kn")
    return Verdict(True)


# --- triviality -------------------------------------------------------------------------------

def _plain_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w:.\- ]+", " ", text.lower())).strip(" .")


def check_triviality(example: dict[str, Any], cfg: ValidateConfig) -> Verdict:
    """The answer must not be spelled out in the question: its text inside the question, or every
    required value (numbers, times, dates, MMSIs, ports; not a label picked from options the
    question lists) stated there. Unanswerable questions name what is absent on purpose."""
    if not example.get("answerable", True):
        return Verdict(True)
    grounding = _loads(example["grounding"])
    user_turns = [m["content"] for m in example["messages"] if m["role"] == "user"]
    questions = [user_turns[0].rsplit("Question:", 1)[-1]] + user_turns[1:]
    answers = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
    names = [n for n in [example.get("vessel_name")] if isinstance(n, str)]
    names += [g["value"] for g in grounding if g["kind"] in ("name", "label") and isinstance(g["value"], str)]
    for i, (question, answer) in enumerate(zip(questions, answers)):
        plain_answer = _plain_text(answer)
        if plain_answer and plain_answer in _plain_text(question):
            return Verdict(False, "trivial", f"the answer of turn {i + 1} is written in its question")
        values = [g for g in grounding if g.get("required") and int(g.get("turn", 0)) == i
                  and g["kind"] not in ("label", "name", "distractor")]
        if values and _missing(values, extract_claims(question, names), question, cfg) is None:
            return Verdict(False, "trivial", f"the question of turn {i + 1} states every value its answer must give")
    return Verdict(True)


# --- the gate ---------------------------------------------------------------------------------

@dataclass
class _Step:
    name: str
    check: Callable[[dict[str, Any]], Verdict]
    input: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _domain_steps(cfg: ValidateConfig) -> list[_Step]:
    """validate.domain_validators, each a step named after its function; a document example's
    validators see its corpus (None for AIS examples)."""
    from tasks.documents.grounding import corpus_for
    from tasks.documents.validators import load_domain_validators

    def step(name: str, fn: Callable) -> _Step:
        return _Step(name, lambda ex: fn(ex, corpus_for(ex) if is_document(ex) else None))

    return [step(name, fn) for name, fn in load_domain_validators(cfg.domain_validators)]


def _steps(cfg: ValidateConfig, known: RunNames | None, documents: bool = False, text_grounding: Any = None) -> list[_Step]:
    """The validators in funnel order; schema and grounding always run. Documents: schema, the
    domain validators, text grounding (text_grounding: a primed TextGrounding), triviality."""
    if documents:
        from tasks.documents.grounding import TextGrounding, check_text_triviality

        grounding = text_grounding or TextGrounding(cfg)
        steps = [_Step("schema", check_schema), *_domain_steps(cfg), _Step("grounding", grounding.check)]
        if cfg.triviality:
            steps.append(_Step("triviality", check_text_triviality))
        return steps
    steps = [_Step("schema", check_schema), *_domain_steps(cfg), _Step("grounding", lambda ex: check_grounding(ex, cfg, known))]
    if cfg.plausibility:
        steps.append(_Step("plausibility", lambda ex: check_plausibility(ex, cfg)))
    if cfg.triviality:
        steps.append(_Step("triviality", lambda ex: check_triviality(ex, cfg)))
    return steps


def _run(example: dict[str, Any], steps: list[_Step]) -> tuple[Verdict, list[str]]:
    passed = []
    for step in steps:
        step.input += 1
        verdict = step.check(example)
        if not verdict.keep:
            step.reasons[verdict.reason] = step.reasons.get(verdict.reason, 0) + 1
            return verdict, passed
        passed.append(step.name)
    return Verdict(True), passed


def validate_example(example: dict[str, Any], cfg: ValidateConfig, known: RunNames | None = None) -> Verdict:
    """Every enabled validator in order; the first drop decides."""
    return _run(example, _steps(cfg, known, is_document(example)))[0]


def validate_examples(generated_path: Path, cfg: ValidateConfig, kept_path: Path, quarantine_path: Path,
                      embedding_cache: Path | None = None) -> dict[str, Any]:
    """embedding_cache: where document grounding keeps its MiniLM embeddings between runs."""
    examples = read_jsonl(generated_path)
    documents = bool(examples) and all(is_document(ex) for ex in examples)
    text_grounding = None
    if documents:
        from tasks.documents.grounding import PassageSimilarity, TextGrounding

        text_grounding = TextGrounding(cfg, PassageSimilarity(embedding_cache))
        text_grounding.prime(examples)
    steps = _steps(cfg, run_names(examples), documents, text_grounding)
    kept, rejected = [], []
    for ex in examples:
        verdict, passed = _run(ex, steps)
        if verdict.keep:
            kept.append({**ex, "checks": passed})
        else:
            rejected.append(quarantine_row("validate", verdict.reason, verdict.detail, ex))
    write_jsonl(kept, kept_path)
    write_quarantine(rejected, quarantine_path)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    planted = sum(1 for ex in examples if ex.get("planted_error"))
    planted_caught = sum(1 for r in rejected if json.loads(r["payload"]).get("planted_error"))
    validators = [{"name": s.name, "input": s.input, "dropped": sum(s.reasons.values()), "reasons": dict(sorted(s.reasons.items()))}
                  for s in steps]
    return {"input": len(examples), "kept": len(kept), "rejected": len(rejected), "reasons": dict(sorted(reasons.items())),
            "validators": validators, "planted_errors": planted, "planted_errors_caught": planted_caught}
