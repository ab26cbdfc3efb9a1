"""Text grounding of document examples: citations name sections that exist, and the answer is
supported by the section it cites.

Per assistant turn, in order (the first failure is the reason):
1. citations `[source: <file> §<id>]` (and prose mentions "section 3.2") must name a section of the
   corpus (`citation_not_found`) and the section the turn relies on (`citation_wrong_section`);
   an answer that relies on a section must cite it (`missing_citation`); an out-of-scope answer
   cites nothing (`out_of_scope_cites`);
2. an edge case says what it is: insufficient information, requires human review, out of scope
   (`edge_case_not_flagged`); an answerable question is not refused (`false_edge_case`);
3. every value the turn must state is stated (`missing_required_value`);
4. every number is in the cited section or the question's scenario (`unsupported_number`;
   regulation references and section numbers are checked in 1 and by the domain validators);
5. every sentence with 3 or more key terms has at least validate.text_min_term_overlap of them
   in the cited section or the question (`unsupported_claim`);
6. MiniLM cosine between the answer and the closest passage of the cited section is at least
   validate.text_min_similarity (`unsupported_claim`).
The optional LLM judge (judge.enabled) scores the examples that pass, after this gate.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tasks.artifacts import read_jsonl
from tasks.config import DedupConfig, ValidateConfig
from tasks.documents.seeds import REGULATION_RE, plain, regulation_refs, sentences
from tasks.validate import Verdict

CITATION_RE = re.compile(r"\[source:\s*(?P<file>[^\]§]+?)\s*§\s*(?P<section>[^\]\s]+)\s*\]")
SECTION_MENTION_RE = re.compile(r"\b(?:section|sections|§)\s*(\d+(?:\.\d+)*)", re.IGNORECASE)
NUMBER_RE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
WORD_RE = re.compile(r"[a-z]+")
EDGE_PHRASES = {
    "insufficient_information": re.compile(r"insufficient information|information is insufficient|not enough information", re.I),
    "human_review": re.compile(r"human review", re.I),
    "out_of_scope": re.compile(r"out of scope", re.I),
}
ANY_EDGE_RE = re.compile("|".join(p.pattern for p in EDGE_PHRASES.values()), re.I)
# words an answer uses to frame what a section says (not claims about the rules) and common
# English: not counted as key terms
FRAME_WORDS = frozenset("""
section sections require requires required requirement requirements state states stated says sets set limit limits
value values compliant compliance comply complies violation violates violate scenario scenarios record records
recorded insufficient information determine human review scope procedure procedures provided excerpt excerpts cite
cites citation source answer question given therefore because which within means mean meant define defines defined
definition governs govern covers cover covered short summary summarise following applies apply according specifies
specified also this that these those there their must shall should would could with from into than more less least
most then when where while does have been being each every other only some such what about above below under over
exceed exceeds exceeding meets meet judgement judge person settle right conflict conflicts make made whether allows
allow exception cannot answered nothing refers refer regulation regulations here they them will your just like very
compare compared give gives given
""".split())
MIN_TERMS = 3  # sentences with fewer key terms ("Not compliant.") are not scored
SIMILARITY_SEQ_LENGTH = 256  # word pieces: a chunk passage of two sentences fits


class Corpus:
    """The sections of a run's corpus (sections.jsonl) and the regulation references they make."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.sections = {(r["source_file"], r["section_id"]): r for r in rows}
        self.references = {ref for r in rows for ref in regulation_refs(r["text"])}

    def exists(self, source_file: str, section_id: str) -> bool:
        return (source_file, section_id) in self.sections

    def has_reference(self, ref: str) -> bool:
        """The reference is made in the corpus, or is the part/regulation one is made under
        ("33 CFR 83" for "33 CFR 83.06")."""
        ref = re.sub(r"\s+", " ", re.sub(r"\bPart\s+", "", ref))
        return ref in self.references or any(r.startswith(ref + s) for r in self.references for s in ".-/")


@lru_cache(maxsize=8)
def load_corpus(path: str | None) -> Corpus | None:
    """The corpus an example was made from (None when its sections file is gone)."""
    if not path or not Path(path).is_file():
        return None
    return Corpus(read_jsonl(Path(path)))


def corpus_for(example: dict[str, Any]) -> Corpus | None:
    fact = _fact(example)
    return load_corpus(fact.get("corpus_index")) if isinstance(fact, dict) else None


def _fact(example: dict[str, Any]) -> Any:
    fact = example.get("fact")
    return json.loads(fact) if isinstance(fact, str) else fact or {}


def _stem(word: str) -> str:
    for suffix in ("ations", "ation", "ings", "ing", "ied", "ies", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def key_terms(text: str) -> list[str]:
    """Stems of the content words (4+ letters, not frame words) in order."""
    return [_stem(w) for w in WORD_RE.findall(text.lower()) if len(w) >= 4 and w not in FRAME_WORDS]


def without_references(text: str) -> str:
    """Text with citations, regulation references and section mentions blanked out."""
    for pattern in (CITATION_RE, REGULATION_RE, SECTION_MENTION_RE):
        text = pattern.sub(" ", text)
    return text


def numbers_in(text: str) -> set[float]:
    return {float(n) for n in NUMBER_RE.findall(without_references(plain(text)))}


def passages(text: str) -> list[str]:
    """What an answer is compared with: each pair of consecutive sentences of the section."""
    said = sentences(text)
    return [" ".join(said[i:i + 2]) for i in range(max(len(said) - 1, 1))] or [plain(text)]


@lru_cache(maxsize=1)
def _embedder():
    from tasks.dedup import load_embedder

    return load_embedder(DedupConfig(max_seq_length=SIMILARITY_SEQ_LENGTH))


class PassageSimilarity:
    """MiniLM cosines, embeddings kept per text (and in the shared embedding cache when given)."""

    def __init__(self, cache_path: Path | None = None):
        self.cache_path = cache_path
        self.vectors: dict[str, np.ndarray] = {}

    def prime(self, texts: list[str]) -> None:
        from tasks.dedup import embed_texts

        missing = sorted({t for t in texts if t not in self.vectors})
        if missing:
            vectors, _ = embed_texts(missing, DedupConfig(max_seq_length=SIMILARITY_SEQ_LENGTH), self.cache_path, _embedder())
            self.vectors.update(zip(missing, vectors))

    def best(self, answer: str, candidates: list[str]) -> float:
        self.prime([answer, *candidates])
        return max(float(self.vectors[answer] @ self.vectors[c]) for c in candidates)


def _turns(example: dict[str, Any]) -> tuple[list[str], list[str]]:
    users = [m["content"] for m in example["messages"] if m["role"] == "user"]
    answers = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
    return [users[0].rsplit("Question:", 1)[-1]] + users[1:], answers


def _answer_body(text: str) -> str:
    return re.sub(r"\s+", " ", CITATION_RE.sub(" ", text)).strip()


class TextGrounding:
    """The grounding check of document examples (see the module docstring)."""

    def __init__(self, cfg: ValidateConfig, similarity: PassageSimilarity | None = None):
        self.cfg = cfg
        self.similarity = similarity or PassageSimilarity()

    def prime(self, examples: list[dict[str, Any]]) -> None:
        """Embed every answer and passage of these examples in one batch."""
        texts = []
        for ex in examples:
            try:
                section = _fact(ex)["text"]
                texts += passages(section) + [_answer_body(a) for a in _turns(ex)[1]]
            except (KeyError, TypeError, ValueError, IndexError):
                continue
        self.similarity.prime(texts)

    def check(self, example: dict[str, Any], corpus: Corpus | None = None) -> Verdict:
        fact = _fact(example)
        grounding = example.get("grounding")
        grounding = json.loads(grounding) if isinstance(grounding, str) else grounding or []
        corpus = corpus or load_corpus(fact.get("corpus_index"))
        section_text = fact.get("text", "")
        questions, answers = _turns(example)
        edge = None if example.get("answerable", True) else example.get("unanswerable_kind")
        asked = ""
        for turn, text in enumerate(answers):
            asked += " " + (questions[turn] if turn < len(questions) else "")
            own = [g for g in grounding if int(g.get("turn", 0)) == turn]
            verdict = self._check_turn(text, own, section_text, asked, edge if turn == 0 else None, corpus)
            if not verdict.keep:
                where = f" (turn {turn + 1})" if len(answers) > 1 else ""
                return Verdict(False, verdict.reason, f"{verdict.detail}{where}")
        return Verdict(True)

    def _check_turn(self, text: str, own: list[dict[str, Any]], section_text: str, asked: str, edge: str | None,
                    corpus: Corpus | None) -> Verdict:
        cited_here = [(m["file"].strip(), m["section"].strip()) for m in CITATION_RE.finditer(text)]
        relied_on = {(g["source_file"], g["section_id"]) for g in own if g["kind"] == "citation"}
        if edge == "out_of_scope" and cited_here:
            return Verdict(False, "out_of_scope_cites", "an out-of-scope answer cites a section as if it covered the question")
        for file, section in cited_here:
            known = corpus.exists(file, section) if corpus is not None else (file, section) in relied_on
            if not known:
                return Verdict(False, "citation_not_found", f"cites {file} §{section}, which the corpus does not have")
            if (file, section) not in relied_on:
                relies = ", ".join(f"{f} §{s}" for f, s in sorted(relied_on)) or "no section"
                return Verdict(False, "citation_wrong_section", f"cites {file} §{section}; the answer relies on {relies}")
        if any(g.get("required") for g in own if g["kind"] == "citation") and not cited_here:
            return Verdict(False, "missing_citation", "the answer does not cite the section it relies on")
        files = {f for f, _ in relied_on}
        for m in SECTION_MENTION_RE.finditer(CITATION_RE.sub(" ", text)):
            mentioned = m.group(1)
            exists = any(corpus.exists(f, mentioned) for f in files) if corpus is not None else any(s == mentioned for _, s in relied_on)
            if files and not exists:
                return Verdict(False, "citation_not_found", f"mentions section {mentioned}, which {', '.join(sorted(files))} does not have")
        if edge and not EDGE_PHRASES[edge].search(text):
            return Verdict(False, "edge_case_not_flagged", f"a {edge.replace('_', ' ')} case answered without saying so")
        if not edge and ANY_EDGE_RE.search(text):
            return Verdict(False, "false_edge_case", "an answerable question answered as an edge case")

        body = _answer_body(text)
        stated = numbers_in(body)
        for g in own:
            if not g.get("required"):
                continue
            if g["kind"] == "number" and float(g["value"]) not in stated:
                return Verdict(False, "missing_required_value", f"does not state {g['name']} {g['value']:g}")
            if g["kind"] in ("term", "reference") and str(g["value"]).lower() not in re.sub(r"\s+", " ", text.lower()):
                return Verdict(False, "missing_required_value", f"does not state {g['name']} {g['value']}")
        evidence = asked if edge == "out_of_scope" else f"{section_text} {asked}"
        extra = sorted(stated - numbers_in(evidence))
        if extra:
            return Verdict(False, "unsupported_number", f"states {', '.join(f'{n:g}' for n in extra)}, in neither the cited "
                                                         "section nor the question")
        if edge == "out_of_scope":
            return Verdict(True)
        known_terms = set(key_terms(plain(evidence)))
        for sentence in sentences(without_references(body)):
            terms = key_terms(sentence)
            if len(terms) < MIN_TERMS:
                continue
            missing = [t for t in terms if t not in known_terms]
            share = 1 - len(missing) / len(terms)
            if share < self.cfg.text_min_term_overlap:
                return Verdict(False, "unsupported_claim", f"{share:.2f} of the key terms of \"{sentence[:80]}\" are in the cited "
                                                           f"section (below {self.cfg.text_min_term_overlap}); not there: "
                                                           f"{', '.join(sorted(set(missing))[:6])}")
        cosine = self.similarity.best(body, passages(section_text))
        if cosine < self.cfg.text_min_similarity:
            return Verdict(False, "unsupported_claim", f"cosine {cosine:.3f} to the closest passage of the cited section, "
                                                       f"below {self.cfg.text_min_similarity}")
        return Verdict(True)


def check_text_triviality(example: dict[str, Any]) -> Verdict:
    """The answer is not already the question: its text inside the question of its turn."""
    questions, answers = _turns(example)
    for i, (question, answer) in enumerate(zip(questions, answers)):
        body = re.sub(r"\W+", " ", _answer_body(answer).lower()).strip()
        if body and body in re.sub(r"\W+", " ", question.lower()):
            return Verdict(False, "trivial", f"the answer of turn {i + 1} is written in its question")
    return Verdict(True)
