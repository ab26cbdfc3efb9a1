"""Document seeds: what to ask of each chunk, per instruction template, with edge cases on purpose.

Items are read from a chunk's text: numbered requirements with a numeric limit ("shall be not
more than 15 minutes"), definitions ("**Anchor watch** means ..."), regulation references and
the section itself (title, first sentences). Each instruction template turns items into
candidate seeds:
- qa: the limit of a requirement, a definition, the regulation a section cites;
- compliance: a scenario built from a requirement with a value that complies or violates it;
- summary: the section's content;
- which_section: several sections of a file as context; which one governs a topic, a limit, a
  term, or a scenario.
Edge cases (answerable false): insufficient_information (the scenario does not state the value
the requirement limits), human_review (the requirement has an exception left to someone's
judgement, or two records conflict), out_of_scope (the corpus does not cover what is asked).

Sampling: edge cases take edge_case_share of max_seeds (split by edge_case_kinds), the rest is
split by template share, then round-robin over form x source file so no one document crowds out
the others; then a share of answerable seeds become dialogues (follow-ups on the same chunk).
Every seed carries the file, section id, character span and the values its answer must state.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.artifacts import read_jsonl
from tasks.config import DocumentsConfig
from tasks.errors import InputError
from tasks.seeds import apportion, round_robin

UNITS = (r"cubic metres per hour|nautical miles|per cent|knots|metres|minutes|hours|seconds|degrees|years|times")
# What a value of each unit can physically be in a vessel's operations (inclusive bounds):
# knots: the fastest merchant ships make about 40 kn and fast ferries about 50 (as stage's
# max_implied_speed_kn); nautical miles: no two points at sea are farther apart than half the
# Earth's circumference (10,800 nm); metres: the deepest sounding is about 10,935 m; durations
# up to a week (minutes), a year (hours), a day (seconds); per cent of a whole; bunker pumping
# up to 20,000 m3/h (a VLCC's cargo pumps together make about 15,000); document retention and
# multiples of a draught well below 100.
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "knots": (0.0, 60.0), "nautical miles": (0.0, 10_800.0), "metres": (0.0, 11_000.0), "minutes": (0.0, 10_080.0),
    "hours": (0.0, 8_784.0), "seconds": (0.0, 86_400.0), "degrees": (0.0, 360.0), "per cent": (0.0, 100.0),
    "cubic metres per hour": (0.0, 20_000.0), "years": (0.0, 100.0), "times": (0.0, 100.0),
}
COMPARATORS = {"not more than": "max", "no more than": "max", "at most": "max", "within": "max",
               "not less than": "min", "at least": "min"}
LIMIT_RE = re.compile(rf"\b(?P<cmp>{'|'.join(COMPARATORS)})\s+(?P<num>\d+(?:\.\d+)?)\s+(?P<unit>{UNITS})\b")
DEFINITION_RE = re.compile(r"(?:\*\*|\")(?P<term>[^*\"\n]{2,40})(?:\*\*|\")\s+means\s+(?P<definition>[^.]+)\.")
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"*])")
EXCEPTION_RE = re.compile(r",?\s*\b(?P<clause>(?:except where|unless)\b[^.;]*)")
REGULATION_RE = re.compile(
    r"\b\d{1,2}\s+CFR\s+(?:Part\s+)?\d{1,4}(?:\.\d+)?"
    r"|\bSOLAS\s+(?:Chapter\s+)?[IVX]+(?:-\d+)?/\d+(?:-\d+)?(?:\.\d+)*"
    r"|\bMARPOL\s+Annex\s+[IVX]+(?:/\d+)?"
)
IRREGULAR_PAST = {"keep": "kept", "make": "made", "send": "sent", "take": "took", "give": "gave", "set": "set"}
# what the corpus does not cover: out-of-scope questions (topic, question)
OFF_TOPIC = (
    ("crew overtime pay", "How is crew overtime pay calculated during a port stay?"),
    ("galley menus", "What must the galley serve on Sundays?"),
    ("cargo insurance premiums", "How large is the cargo insurance premium for a laden passage?"),
    ("shore leave visas", "Which visa does a crew member need for shore leave?"),
    ("funnel paint colours", "Which colour must the funnel be painted?"),
    ("crew internet allowances", "What monthly data allowance does the crew's satellite internet give?"),
)
# forms: (template, difficulty)
FORMS = {
    "qa_requirement": ("qa", "medium"), "qa_definition": ("qa", "easy"), "qa_reference": ("qa", "easy"),
    "compliance_violation": ("compliance", "medium"), "compliance_ok": ("compliance", "hard"),
    "summary": ("summary", "easy"),
    "which_section_topic": ("which_section", "easy"), "which_section_term": ("which_section", "easy"),
    "which_section_limit": ("which_section", "medium"), "which_section_scenario": ("which_section", "hard"),
    "edge_insufficient_information": ("compliance", "hard"), "edge_human_review": ("compliance", "hard"),
    "edge_out_of_scope": ("qa", "medium"),
}


@dataclass
class DocumentSeed:
    seed_id: str
    category: str              # the instruction template
    difficulty: str
    form: str
    answerable: bool
    source_file: str
    section_id: str
    section_title: str
    section_path: list[str]
    span: list[int]            # [start, end) of the chunk in the file's text
    file_digest: str
    chunk_text: str            # the text the answer relies on
    context: str               # the user turn before the question: excerpt(s) and the instruction
    item: dict[str, Any]       # what is asked: requirement, definition, reference, section, off-topic
    grounding: list[dict[str, Any]]
    corpus_index: str          # sections.jsonl of the run: every section that exists
    system_prompt: str
    split_key: str             # the split unit: doc:<file>#<section> (or doc:<file>)
    edge_case: str | None = None
    followups: list[dict[str, Any]] = field(default_factory=list)  # [{form, category, difficulty, item, grounding, instruction}]
    # split units whose text the context also shows (which-section questions): publish keeps the
    # example only when they all fall on its side of the split
    context_split_keys: list[str] = field(default_factory=list)
    domain: str = "documents"
    mmsi: None = None          # the AIS seed's vessel: documents have none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def citation(self) -> str:
        return citation_text(self.source_file, self.section_id)


def citation_text(source_file: str, section_id: str) -> str:
    return f"[source: {source_file} §{section_id}]"


def seed_hash(*parts: Any) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def plain(text: str) -> str:
    """Text without Markdown emphasis and line breaks (what sentences are read from)."""
    return re.sub(r"\s+", " ", text.replace("**", "\"")).strip()


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_RE.split(plain(text)) if s.strip()]


def _body(chunk: dict[str, Any]) -> str:
    """The chunk without its heading line (when the chunk starts at the heading)."""
    first, _, rest = chunk["text"].partition("\n")
    return rest if first.lstrip("# ").strip() == chunk["title"] else chunk["text"]


def _past(prefix: str) -> str | None:
    """A requirement's subject in the past tense: "X shall be checked at" -> "X was checked at"."""
    if re.search(r"\bshall be\b", prefix):
        return re.sub(r"\bshall be\b", "was", prefix, count=1)
    m = re.search(r"\bshall (\w+)", prefix)
    if not m:
        return None
    verb = m.group(1)
    past = IRREGULAR_PAST.get(verb) or (verb + "d" if verb.endswith("e") else verb + "ed")
    return prefix[:m.start()] + past + prefix[m.end():]


def requirements(text: str) -> list[dict[str, Any]]:
    """Sentences that set a numeric limit: {sentence, comparator (max/min), words, number, unit,
    scenario_prefix, scenario_suffix, exception}."""
    out = []
    for sentence in sentences(text):
        if "shall" not in sentence:
            continue
        for m in LIMIT_RE.finditer(sentence):
            prefix = _past(sentence[:m.start()].strip())
            if not prefix or LIMIT_RE.search(prefix):
                continue  # a second limit in one sentence makes no clear scenario
            suffix = re.split(r";|, (?:except|unless|as required)|,? as required by", sentence[m.end():])[0].rstrip(". ")
            if m["cmp"] == "within":  # "within 15 minutes of departure": the scenario's value is "22 minutes after departure"
                suffix = re.sub(r"^of\b", "after", suffix.strip())
            exception = EXCEPTION_RE.search(sentence)
            out.append({"kind": "requirement", "sentence": sentence, "lead": sentence[:m.start()].strip(),
                        "comparator": COMPARATORS[m["cmp"]], "words": m["cmp"],
                        "number": float(m["num"]), "number_text": m["num"], "unit": m["unit"],
                        "scenario_prefix": prefix[0].upper() + prefix[1:], "scenario_suffix": suffix,
                        "exception": exception["clause"].strip() if exception else None})
    return out


def definitions(text: str) -> list[dict[str, Any]]:
    return [{"kind": "definition", "term": m["term"].strip(), "definition": plain(m["definition"]),
             "sentence": plain(m.group())} for m in DEFINITION_RE.finditer(text)]


def regulation_refs(text: str) -> list[str]:
    """Regulation references as written, whitespace collapsed, "Part" dropped (33 CFR 83)."""
    return list(dict.fromkeys(re.sub(r"\s+", " ", re.sub(r"\bPart\s+", "", m.group())) for m in REGULATION_RE.finditer(text)))


def _scenario_value(req: dict[str, Any], violate: bool, rng: np.random.Generator) -> float | None:
    """A value that violates (or complies with) the requirement, written like its limit (same
    decimals), never equal to it, inside the unit's physical range (None when there is no room:
    nothing can be above a limit of 100 per cent)."""
    n = req["number"]
    decimals = len(req["number_text"].split(".")[1]) if "." in req["number_text"] else 0
    step = 10 ** -decimals
    above = violate == (req["comparator"] == "max")
    low, high = PHYSICAL_RANGES[req["unit"]]
    if (above and n + step > high) or (not above and n - step < max(low, step)):
        return None
    factor = float(rng.uniform(1.3, 1.9)) if above else float(rng.uniform(0.4, 0.75))
    value = min(max(round(n * factor, decimals), max(low, step)), high)
    if above and value <= n:
        value = round(n + step, decimals)
    if not above and value >= n:
        value = round(n - step, decimals)
    return value


def fmt(value: float) -> str:
    return f"{value:g}"


def scenario(req: dict[str, Any], value: float | None) -> str:
    stated = f"{fmt(value)} {req['unit']}" if value is not None else f"an unstated number of {req['unit']}"
    return f"{req['scenario_prefix']} {stated}{(' ' + req['scenario_suffix']) if req['scenario_suffix'] else ''}."


def _citation_entry(chunk: dict[str, Any], turn: int = 0, required: bool = True) -> dict[str, Any]:
    return {"name": "citation", "value": f"{chunk['source_file']} §{chunk['section_id']}", "kind": "citation",
            "required": required, "turn": turn, "source_file": chunk["source_file"], "section_id": chunk["section_id"],
            "span": [chunk["start"], chunk["end"]]}


def item_grounding(form: str, item: dict[str, Any], chunk: dict[str, Any], turn: int = 0) -> list[dict[str, Any]]:
    """What the answer of this turn must (or may) state: the citation and the values."""
    if form == "edge_out_of_scope":
        return []
    out = [_citation_entry(chunk, turn)]
    if item["kind"] == "requirement" and form != "which_section_topic":
        out.append({"name": "limit", "value": item["number"], "kind": "number", "required": form != "which_section_scenario",
                    "turn": turn, "unit": item["unit"]})
        if item.get("observed") is not None:
            out.append({"name": "observed", "value": item["observed"], "kind": "number", "required": False, "turn": turn,
                        "unit": item["unit"]})
    if item["kind"] == "definition":
        out.append({"name": "term", "value": item["term"], "kind": "term", "required": True, "turn": turn})
    if item["kind"] == "reference":
        out += [{"name": "regulation", "value": ref, "kind": "reference", "required": True, "turn": turn}
                for ref in item["references"]]
    return out


def _excerpt(chunk: dict[str, Any]) -> str:
    return f"{citation_text(chunk['source_file'], chunk['section_id'])} {' > '.join(chunk['path'])}\n{chunk['text'].strip()}"


def candidates_for(chunk: dict[str, Any], rng: np.random.Generator) -> list[tuple[str, dict[str, Any]]]:
    """(form, item) pairs one chunk can be asked with (which_section and edge cases aside)."""
    body = _body(chunk)
    out: list[tuple[str, dict[str, Any]]] = []
    reqs = requirements(body)
    for req in reqs:
        out.append(("qa_requirement", req))
        for violate, form in ((True, "compliance_violation"), (False, "compliance_ok")):
            observed = _scenario_value(req, violate, rng)
            if observed is None:
                continue
            out.append((form, {**req, "observed": observed, "violates": violate, "scenario": scenario(req, observed)}))
    for d in definitions(body):
        out.append(("qa_definition", d))
    refs = regulation_refs(body)
    if refs:
        out.append(("qa_reference", {"kind": "reference", "references": refs}))
    said = sentences(body)
    if said:
        out.append(("summary", {"kind": "section", "sentences": said[:3], "more": len(said) > 3}))
    return out


def build_candidates(chunks: list[dict[str, Any]], cfg: DocumentsConfig, corpus_index: str) -> list[DocumentSeed]:
    """Every seed the corpus can give, edge cases included (sampling picks among them)."""
    rng = np.random.default_rng(cfg.seed)
    out: list[DocumentSeed] = []
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in chunks:
        by_file[c["source_file"]].append(c)

    def unit(chunk: dict[str, Any]) -> str:
        return f"doc:{chunk['source_file']}" + (f"#{chunk['section_id']}" if cfg.split_by == "section" else "")

    def make(form: str, item: dict[str, Any], chunk: dict[str, Any], context: str, edge: str | None = None,
             shown: list[dict[str, Any]] | None = None) -> DocumentSeed:
        template, difficulty = FORMS[form]
        instruction = cfg.templates[template].instruction
        sid = seed_hash(form, chunk["chunk_id"], json.dumps(item, sort_keys=True))
        return DocumentSeed(
            sid, template, difficulty, form, edge is None, chunk["source_file"], chunk["section_id"], chunk["title"],
            chunk["path"], [chunk["start"], chunk["end"]], chunk["file_digest"], chunk["text"],
            f"{context}\n\n{instruction}", item, item_grounding(form, item, chunk), corpus_index, cfg.system_prompt,
            unit(chunk), edge,
            context_split_keys=sorted({unit(c) for c in shown or []} - {unit(chunk)}))

    for chunk in chunks:
        excerpt = _excerpt(chunk)
        items = candidates_for(chunk, rng)
        for form, item in items:
            out.append(make(form, item, chunk, excerpt))
        for req in (i for f, i in items if f == "qa_requirement"):
            out.append(make("edge_insufficient_information", {**req, "scenario": scenario(req, None)}, chunk, excerpt,
                            "insufficient_information"))
            a, b = _scenario_value(req, True, rng), _scenario_value(req, False, rng)
            if a is None or b is None:
                continue
            if req["exception"]:
                out.append(make("edge_human_review", {**req, "observed": a, "conflict": None,
                                                      "scenario": scenario(req, a)}, chunk, excerpt, "human_review"))
            else:
                out.append(make("edge_human_review", {**req, "observed": a, "conflict": b, "scenario": scenario(req, a)},
                                chunk, excerpt, "human_review"))
        for topic, question in OFF_TOPIC:
            out.append(make("edge_out_of_scope", {"kind": "off_topic", "topic": topic, "question": question}, chunk, excerpt,
                            "out_of_scope"))
        # which section: the chunk among its neighbours in the same file
        siblings = [c for c in by_file[chunk["source_file"]] if c["section_id"] != chunk["section_id"]]
        if not siblings:
            continue
        k = min(cfg.which_section_candidates - 1, len(siblings))
        shown = sorted([chunk] + [siblings[i] for i in rng.choice(len(siblings), size=k, replace=False)],
                       key=lambda c: c["start"])
        context = "\n\n".join(_excerpt(c) for c in shown)
        title = re.sub(r"^\d+(?:\.\d+)*\s+", "", chunk["title"])
        unique_title = sum(re.sub(r"^\d+(?:\.\d+)*\s+", "", c["title"]).lower() == title.lower() for c in shown) == 1
        if unique_title and not re.search(r"definitions|scope|general|purpose", title, re.IGNORECASE):
            out.append(make("which_section_topic", {"kind": "topic", "topic": title.lower(), "sentence": (sentences(_body(chunk)) or [""])[0]},
                            chunk, context, shown=shown))
        for form, item in items:
            if form == "qa_definition":
                out.append(make("which_section_term", item, chunk, context, shown=shown))
            elif form == "qa_requirement":
                out.append(make("which_section_limit", item, chunk, context))
            elif form == "compliance_violation":
                out.append(make("which_section_scenario", item, chunk, context))
    return out


def _followup(seed: DocumentSeed, cfg: DocumentsConfig) -> dict[str, Any]:
    return {"form": seed.form, "category": seed.category, "difficulty": seed.difficulty, "item": seed.item,
            "instruction": cfg.templates[seed.category].instruction}


def sample_seeds(candidates: list[DocumentSeed], cfg: DocumentsConfig) -> tuple[list[DocumentSeed], dict[str, Any]]:
    rng = np.random.default_rng(cfg.seed)
    n_edge = round(cfg.max_seeds * cfg.edge_case_share)
    n_answerable = cfg.max_seeds - n_edge
    pools: dict[str, list[DocumentSeed]] = defaultdict(list)
    for s in sorted(candidates, key=lambda s: s.seed_id):
        pools[s.edge_case or s.category].append(s)
    chosen: list[DocumentSeed] = []
    targets: dict[str, Any] = {}
    shares = {k: v.share for k, v in cfg.templates.items() if v.share > 0}
    edge_shares = {k: v for k, v in cfg.edge_case_kinds.items() if v > 0}
    for group, n in sorted((apportion(n_answerable, shares) | (apportion(n_edge, edge_shares) if edge_shares else {})).items()):
        take = round_robin(pools.get(group, []), n, rng, lambda s: (s.form, s.source_file))
        chosen += take
        targets[group] = {"target": n, "available": len(pools.get(group, [])), "taken": len(take)}

    # dialogues: an answerable single-excerpt seed followed up by other questions on the same chunk
    by_chunk: dict[tuple[str, int], list[DocumentSeed]] = defaultdict(list)
    for s in candidates:
        if s.answerable and not s.form.startswith("which_section"):
            by_chunk[(s.source_file, s.span[0])].append(s)
    n_dialogues = round(len(chosen) * cfg.multi_turn_share)
    can_chain = [s for s in chosen if s.answerable and not s.form.startswith("which_section")
                 and len({o.form for o in by_chunk[(s.source_file, s.span[0])]} - {s.form})]
    dialogues = 0
    for i in sorted(rng.choice(len(can_chain), size=min(n_dialogues, len(can_chain)), replace=False)) if can_chain else []:
        s = can_chain[i]
        others = [o for o in by_chunk[(s.source_file, s.span[0])] if o.form != s.form]
        k = int(rng.integers(1, min(cfg.max_followups, len(others)) + 1))
        picked = [others[j] for j in sorted(rng.choice(len(others), size=k, replace=False))]
        s.followups = [_followup(o, cfg) for o in picked]
        for turn, o in enumerate(picked, start=1):
            s.grounding = s.grounding + [{**g, "turn": turn} for g in o.grounding if int(g.get("turn", 0)) == 0]
        dialogues += 1
    chosen.sort(key=lambda s: s.seed_id)
    return chosen, {"candidates": len(candidates), "seeds": len(chosen), "targets": targets, "dialogues": dialogues,
                    "unanswerable": sum(not s.answerable for s in chosen),
                    "edge_cases": dict(sorted(Counter(s.edge_case for s in chosen if s.edge_case).items())),
                    "shares": share_report(chosen, cfg),
                    "candidates_per_form": dict(sorted(Counter(s.form for s in candidates).items()))}


def share_report(seeds: list[Any], cfg: DocumentsConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """Target and actual shares (the report's question-mix table): templates of answerable seeds;
    edge cases (unanswerable) and dialogues of all; each edge-case kind of all. Difficulty follows
    from the forms chosen (FORMS) and is not a target here."""
    def get(s: Any, key: str) -> Any:
        return s[key] if isinstance(s, dict) else getattr(s, key)

    answerable = [s for s in seeds if get(s, "answerable")]
    n, n_ans = len(seeds) or 1, len(answerable) or 1
    template_total = sum(t.share for t in cfg.templates.values() if t.share > 0)
    edge_total = sum(cfg.edge_case_kinds.values())
    turns = [len(get(s, "followups")) + 1 if not isinstance(s, dict) else int(s.get("turns", 1)) for s in seeds]
    edge_of = [get(s, "edge_case") if not isinstance(s, dict) else s.get("unanswerable_kind") for s in seeds]
    table = {
        "category": {k: (t.share / template_total, sum(get(s, "category") == k for s in answerable) / n_ans)
                     for k, t in sorted(cfg.templates.items()) if t.share > 0},
        "kind": {"unanswerable": (cfg.edge_case_share, sum(not get(s, "answerable") for s in seeds) / n),
                 "multi_turn": (cfg.multi_turn_share, sum(t > 1 for t in turns) / n)},
        "edge_case": {k: (cfg.edge_case_share * v / edge_total, sum(e == k for e in edge_of) / n)
                      for k, v in sorted(cfg.edge_case_kinds.items())},
    }
    return {dim: {key: {"target": round(t, 4), "actual": round(a, 4), "within_tolerance": abs(a - t) <= cfg.share_tolerance + 1e-9}
                  for key, (t, a) in rows.items()}
            for dim, rows in table.items()}


def build_document_seeds(chunks_path: Path, corpus_index: Path, cfg: DocumentsConfig, out_path: Path) -> dict[str, Any]:
    """Seeds of the chunks in chunks_path; corpus_index: the sections file citations are checked against."""
    chunks = read_jsonl(chunks_path)
    candidates = build_candidates(chunks, cfg, str(corpus_index))
    if not any(c.answerable for c in candidates):
        raise InputError(
            f"no question can be asked of the {len(chunks)} chunks in {chunks_path}: no section has a numbered requirement, "
            "a definition, a regulation reference or a sentence; add documents with numbered sections"
        )
    seeds, stats = sample_seeds(candidates, cfg)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for s in seeds:
            fh.write(json.dumps(s.to_dict()) + "\n")
    tmp.replace(out_path)
    return stats


def read_document_seeds(path: Path) -> list[DocumentSeed]:
    return [DocumentSeed(**row) for row in read_jsonl(path)]
