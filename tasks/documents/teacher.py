"""Teachers for document seeds: the offline template teacher, the LLM prompt, the example record.

The template teacher writes questions from headings, numbered requirements and definitions and
answers that restate the cited section, each ending with the citation `[source: <file> §<id>]`.
With teacher.corrupt_share it plants a wrong citation, a changed number or a claim the section
does not make, so the text grounding gate has real work offline. LLM teachers get the excerpt,
the values every turn must state, the citation to use and a grounded draft to rewrite; they
answer with the same `{"turns": [...]}` JSON as for AIS, through the same runner, cache, ledger
and rate limits.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np

from tasks.config import TeacherConfig
from tasks.documents.seeds import DocumentSeed, citation_text, fmt
from tasks.teacher import generation_provenance

PROMPT_VERSION = "documents-template-v1"
LLM_PROMPT_VERSION = "documents-llm-v1"
# a claim no section makes: what corrupt_share plants to exercise the support check
PLANTED_CLAIM = "The master must also send a written report to the harbour authority within 12 hours."
FOLLOWUP_OPENERS = ["", "And ", "Next: ", "Also, ", "Follow-up: "]

TEACHER_SYSTEM_PROMPT = (
    "You write training examples for a maritime operations assistant that answers from procedure excerpts. "
    "Return one JSON object and nothing else: {\"turns\": [{\"question\": str, \"reasoning\": str, \"answer\": str}, ...]} "
    "with exactly the number of turns asked for. Rules: each question is what an officer would ask about the excerpt; "
    "the reasoning is one short sentence of method; the answer states every value marked required and ends with the "
    "citation exactly as given, e.g. [source: anchoring.md §3.2]; state no number, regulation or rule that is not in "
    "the excerpt or the question; keep the question's scenario values as given. Edge cases are on purpose: when told the "
    "information is insufficient, the answer says \"insufficient information\"; when told it requires human review, the "
    "answer says \"requires human review\"; when told it is out of scope, the answer says \"out of scope\" and cites nothing."
)


def _doc(seed: DocumentSeed) -> str:
    return seed.section_path[0] if seed.section_path else seed.source_file


def _plain_title(title: str) -> str:
    return re.sub(r"^\d+(?:\.\d+)*\s+", "", title)


def _phrases(form: str, item: dict[str, Any], seed: DocumentSeed) -> tuple[list[str], list[str], list[str]]:
    """(questions, reasoning lines, answers) of one form, over the item's values."""
    sid, title, doc, cite = seed.section_id, _plain_title(seed.section_title), _doc(seed), seed.citation
    if item["kind"] == "requirement":
        words, num, unit, sentence = item["words"], item["number_text"], item["unit"], item["sentence"]
        limit = f"{words} {num} {unit}"
        obs = fmt(item["observed"]) if item.get("observed") is not None else None
        side = "above" if item["comparator"] == "max" else "below"
    if form == "qa_requirement":
        return ([f'What limit does section {sid} ({title}) set where it says "{item["lead"]} ..."?',
                 f'Under the {doc}, what limit applies here: "{item["lead"]} ..."?'], [],
                [f"{limit[0].upper() + limit[1:]}. {sentence} {cite}", f"Section {sid} sets {limit}: {sentence} {cite}"])
    if form in ("compliance_violation", "compliance_ok"):
        questions = [f"Scenario: {item['scenario']} Does this comply with section {sid}?",
                     f"Scenario: {item['scenario']} Identify any violation.",
                     f"Scenario: {item['scenario']} Is this compliant?"]
        reasoning = [f"Section {sid} requires {limit}; the scenario records {obs} {unit}."]
        if form == "compliance_violation":
            return questions, reasoning, [
                f"Not compliant: {obs} {unit} is {side} the limit of {limit} in section {sid}. {cite}",
                f"This violates section {sid}, which requires {limit}; the scenario records {obs} {unit}. {cite}"]
        return questions, reasoning, [
            f"Compliant: {obs} {unit} is within the limit of {limit} in section {sid}. {cite}",
            f"No violation: section {sid} requires {limit}, and {obs} {unit} meets it. {cite}"]
    if form == "qa_definition":
        term, definition = item["term"], item["definition"]
        return ([f'How does the {doc} define "{term}"?', f'What does "{term}" mean in the {doc}?',
                 f'What is meant by "{term}" in section {sid}?'], [],
                [f'"{term}" means {definition}. {cite}', f'In section {sid}, "{term}" means {definition}. {cite}'])
    if form == "qa_reference":
        refs = " and ".join(item["references"])
        return ([f"Which regulations does section {sid} ({title}) refer to?",
                 f"What regulation does section {sid} of the {doc} cite?"], [],
                [f"Section {sid} refers to {refs}. {cite}", f"It cites {refs}. {cite}"])
    if form == "summary":
        said = " ".join(item["sentences"])
        return ([f"Summarise section {sid} ({title}) of the {doc}.", f"What does section {sid} ({title}) cover?",
                 f"Give a short summary of section {sid}."], [],
                [f"Section {sid} ({title}) sets out the following. {said} {cite}", f"In short: {said} {cite}"])
    if form == "which_section_topic":
        return ([f"Which of these sections governs {item['topic']}?", f"Where is {item['topic']} covered?"], [],
                [f"Section {sid} ({title}) of {seed.source_file} governs {item['topic']}: {item['sentence']} {cite}"])
    if form == "which_section_term":
        return ([f'Which section defines "{item["term"]}"?'], [],
                [f'Section {sid} ({title}) defines it: "{item["term"]}" means {item["definition"]}. {cite}'])
    if form == "which_section_limit":
        return ([f"Which section sets the limit of {limit}?", f"Where is the limit of {limit} set?"], [],
                [f"Section {sid} ({title}): {sentence} {cite}"])
    if form == "which_section_scenario":
        return ([f"Scenario: {item['scenario']} Which section governs this situation?"], [],
                [f"Section {sid} ({title}) governs it: {sentence} {cite}"])
    if form == "edge_insufficient_information":
        return ([f"Scenario: {item['scenario']} Does this comply with section {sid}?"], [],
                [f"Insufficient information to determine compliance: section {sid} requires {limit}, and the scenario "
                 f"does not state the value. {cite}",
                 f"The information is insufficient: the scenario gives no value to compare with the {limit} that "
                 f"section {sid} requires. {cite}"])
    if form == "edge_human_review":
        if item.get("conflict") is None:
            return ([f"Scenario: {item['scenario']} The crew relies on the exception in section {sid}. Is this compliant?"], [],
                    [f"Requires human review: {obs} {unit} is {side} the limit of {limit} in section {sid}, but the section "
                     f"allows an exception ({item['exception']}); whether it applies is a judgement a person must make. {cite}"])
        other = fmt(item["conflict"])
        return ([f"Scenario: {item['scenario']} A second record gives {other} {unit} for the same value. "
                 f"Does this comply with section {sid}?"], [],
                [f"Requires human review: the two records ({obs} and {other} {unit}) conflict, and only one meets the "
                 f"limit of {limit} in section {sid}; a person must settle which record is right. {cite}"])
    if form == "edge_out_of_scope":
        return ([item["question"]], [],
                [f"Out of scope: the procedures provided do not cover {item['topic']}, so this cannot be answered from them.",
                 f"This is out of scope: nothing in these excerpts covers {item['topic']}."])
    raise ValueError(f"unknown document form {form!r}")


class DocumentTemplateTeacher:
    """Offline teacher for document seeds (deterministic per seed and generation seed)."""

    def __init__(self, cfg: TeacherConfig, seed: int = 0, name: str = "template"):
        self.cfg = cfg
        self.seed = seed
        self.name = name

    def _rng(self, seed: DocumentSeed) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}|{seed.seed_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def _plant(self, turn: dict[str, str], item: dict[str, Any], seed: DocumentSeed, rng: np.random.Generator) -> str:
        """Mimic a careless LLM: cite a section that does not exist, change the limit, or add a claim."""
        kinds = ["citation", "claim"] + (["number"] if item.get("kind") == "requirement" and item["number_text"] in turn["answer"] else [])
        kind = str(rng.choice(kinds))
        answer = turn["answer"]
        if kind == "citation":
            major = int(re.match(r"\d+", seed.section_id).group()) if re.match(r"\d+", seed.section_id) else 0
            wrong = citation_text(seed.source_file, f"{major + 11}.{int(rng.integers(1, 9))}")
            answer = answer.replace(seed.citation, wrong) if seed.citation in answer else f"{answer} {wrong}"
        elif kind == "number":
            wrong = item["number"] * float(rng.choice([1.5, 2.0]))
            answer = answer.replace(item["number_text"], fmt(round(wrong, 2)))
        else:
            cite = seed.citation if answer.endswith(seed.citation) else ""
            answer = f"{answer[: len(answer) - len(cite)].rstrip()} {PLANTED_CLAIM} {cite}".strip()
        turn["answer"] = answer
        return kind

    def generate(self, seed: DocumentSeed):
        from tasks.teacher import Generation

        rng = self._rng(seed)
        turns_in = [{"form": seed.form, "item": seed.item, "instruction": None}] + list(seed.followups)
        plant_turn = int(rng.integers(0, len(turns_in))) if seed.answerable and rng.random() < self.cfg.corrupt_share else None
        planted, turns = None, []
        for i, t in enumerate(turns_in):
            questions, reasoning, answers = _phrases(t["form"], t["item"], seed)
            question = str(rng.choice(questions))
            if i:
                opener = str(rng.choice(FOLLOWUP_OPENERS))
                question = opener + (question[0].lower() + question[1:] if opener else question)
                if t.get("category") != seed.category:
                    question = f"{t['instruction']} {question}"
            turn = {"question": question, "reasoning": str(rng.choice(reasoning)) if reasoning else "",
                    "answer": str(rng.choice(answers))}
            if i == plant_turn:
                planted = self._plant(turn, t["item"], seed, rng)
            turns.append(turn)
        return Generation(seed.seed_id, turns, self.name, PROMPT_VERSION, planted)


def _value_line(g: dict[str, Any]) -> str:
    value = fmt(g["value"]) if isinstance(g["value"], float) else g["value"]
    unit = f" {g['unit']}" if g.get("unit") else ""
    return f"- {g['name']} = {value}{unit} [{g['kind']}, {'required' if g.get('required') else 'optional'}]"


EDGE_INSTRUCTIONS = {
    "insufficient_information": "This question is an EDGE CASE on purpose: the scenario does not state the value the "
                                "section limits. The answer says there is insufficient information to determine compliance.",
    "human_review": "This question is an EDGE CASE on purpose: the section leaves an exception to someone's judgement, "
                    "or the records conflict. The answer says it requires human review and why.",
    "out_of_scope": "This question is an EDGE CASE on purpose: the excerpts do not cover it. The answer says it is out of "
                    "scope and cites nothing.",
}


def document_teacher_messages(seed: DocumentSeed, draft) -> list[dict[str, str]]:
    """The prompt an LLM teacher gets for a document seed."""
    turns = [{"form": seed.form}] + [{"form": f["form"]} for f in seed.followups]
    lines = [f"Instruction template: {seed.category}; difficulty: {seed.difficulty}; turns: {len(turns)}.", "",
             "What the student will see before the question (do not repeat it):", seed.context, ""]
    if seed.edge_case:
        lines += [EDGE_INSTRUCTIONS[seed.edge_case], ""]
    for i, t in enumerate(turns):
        values = [g for g in seed.grounding if int(g.get("turn", 0)) == i]
        lines += [f"Turn {i + 1} asks: {t['form'].replace('_', ' ')}."]
        if values:
            lines += ["Values and citation:"] + [_value_line(g) for g in values]
            lines += [f"End the answer with the citation {citation_text(seed.source_file, seed.section_id)}."]
    draft_json = json.dumps({"turns": draft.turns}, ensure_ascii=False)
    lines += ["", "A correct draft (rewrite it in your own words and vary the phrasing; keep every value and the citation):",
              f"<draft>{draft_json}</draft>", "", "Answer with the JSON object only."]
    return [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def document_example(seed: DocumentSeed, gen, generation_seed: int) -> dict[str, Any]:
    """A chat-format example with its provenance: file, section id, character span, digest."""
    from tasks.teacher import chat_example_fields

    fact = {"source_file": seed.source_file, "section_id": seed.section_id, "title": seed.section_title,
            "path": seed.section_path, "span": seed.span, "text": seed.chunk_text, "file_digest": seed.file_digest,
            "corpus_index": seed.corpus_index, "items": [seed.item] + [f["item"] for f in seed.followups]}
    return {
        **chat_example_fields(seed, gen, seed.system_prompt, lambda question: f"{seed.context}\n\nQuestion: {question}"),
        "domain": "documents",
        "unanswerable_kind": seed.edge_case,
        "mmsi": None,
        "split_key": seed.split_key,
        "context_split_keys": seed.context_split_keys,
        "source_file": seed.source_file,
        "section_id": seed.section_id,
        "section_title": seed.section_title,
        "section_path": " > ".join(seed.section_path),
        "span": seed.span,
        "seed_id": seed.seed_id,
        "fact": json.dumps(fact, sort_keys=True),
        "grounding": json.dumps(seed.grounding),
        "source_hash": hashlib.md5(f"{seed.file_digest}|{seed.span[0]}|{seed.span[1]}".encode()).hexdigest(),
        **generation_provenance(gen, generation_seed),
    }


JUDGE_SYSTEM_PROMPT = (
    "You grade the answers of a maritime operations assistant that answers from procedure excerpts. Each question "
    "comes with the text of the section the answer must rely on; judge the answer against that text and the question's "
    "scenario only, never against your own knowledge. Score 1-5: 5 = every statement is supported by the section, the "
    "answer states the required values, cites the section as given and answers directly; 4 = the same with minor wording "
    "flaws; 3 = supported but unclear, padded or partly beside the question; 2 = a required value or the citation is "
    "missing, or a claim is not in the section; 1 = a claim contradicts the section, a number or regulation is invented, "
    "the wrong section is cited, or an edge case (insufficient information, requires human review, out of scope) is "
    'answered with a guess. Return one JSON object and nothing else: {"score": <integer 1-5>, "reason": "<one sentence>"}.'
)


def document_judge_messages(example: dict[str, Any]) -> list[dict[str, str]]:
    """The LLM judge's prompt for a document example: per turn the question, the cited section's
    text, the values the answer must state and the answer."""
    grounding = json.loads(example["grounding"]) if isinstance(example["grounding"], str) else example["grounding"]
    fact = json.loads(example["fact"]) if isinstance(example["fact"], str) else example["fact"]
    users = [m["content"] for m in example["messages"] if m["role"] == "user"]
    answers = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
    questions = [users[0].rsplit("Question:", 1)[-1].strip()] + users[1:]
    lines = [f"Instruction template: {example['category']}; turns: {len(answers)}.", "",
             f"Section {fact['source_file']} §{fact['section_id']} ({' > '.join(fact['path'])}):",
             f"<section>{fact['text']}</section>", ""]
    if not example["answerable"]:
        lines += [EDGE_INSTRUCTIONS[example["unanswerable_kind"]], ""]
    for turn, (question, answer) in enumerate(zip(questions, answers)):
        values = [_value_line(g) for g in grounding if int(g.get("turn", 0)) == turn]
        lines += [f'<question turn="{turn + 1}">{question}</question>', f"Required for turn {turn + 1}:",
                  *(values or ["- (none)"]), f'<answer turn="{turn + 1}">{answer}</answer>', ""]
    lines.append("Grade the answer(s) as one dialogue. Answer with the JSON object only.")
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]
