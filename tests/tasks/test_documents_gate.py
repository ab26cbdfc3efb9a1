"""Document seeds, teachers and the quality gate: edge-case shares, text grounding (citations and
support), domain validators, an LLM teacher through the real SDK, and a split that keeps every
section on one side. Built on the project's own corpus, chunked and seeded for real."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tasks.artifacts import read_jsonl, write_jsonl
from tasks.config import DocumentsConfig, SplitConfig, TeacherConfig, load_config
from tasks.documents.chunk import chunk_corpus
from tasks.documents.corpus import write_example_corpus
from tasks.documents.grounding import TextGrounding, load_corpus
from tasks.documents.seeds import build_document_seeds, read_document_seeds
from tasks.documents.validators import numbers_in_physical_range, regulation_references_exist
from tasks.errors import ConfigError
from tasks.publish import publish_dataset
from tasks.teacher import generate_examples
from tasks.validate import validate_example, validate_examples

CONFIG = load_config("pipeline_configs/maritime_ops.yaml")
VALIDATE = CONFIG.validate_


def build(tmp: Path, documents: DocumentsConfig, corrupt_share: float = 0.0) -> tuple[Path, Path]:
    """Corpus -> chunks -> seeds -> template teacher; (seeds path, generated path)."""
    corpus = write_example_corpus(tmp / "corpus")[0].parent
    chunked = chunk_corpus(corpus, documents, tmp / "store", tmp / "documents")
    build_document_seeds(Path(chunked["chunks_path"]), Path(chunked["index_path"]), documents, tmp / "seeds.jsonl")
    generate_examples(tmp / "seeds.jsonl", TeacherConfig(corrupt_share=corrupt_share), 11, tmp / "generated.jsonl")
    return tmp / "seeds.jsonl", tmp / "generated.jsonl"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("docs")
    _, path = build(tmp, CONFIG.documents)
    return read_jsonl(path)


def first(examples: list[dict], form: str) -> dict:
    return json.loads(json.dumps(next(e for e in examples if e["form"] == form and e["turns"] == 1)))


def with_answer(example: dict, answer: str) -> dict:
    messages = [dict(m) for m in example["messages"]]
    messages[-1]["content"] = answer
    return {**example, "messages": messages}


def test_every_clean_example_passes_and_stores_its_source(generated, tmp_path):
    write_jsonl(generated, tmp_path / "generated.jsonl")
    stats = validate_examples(tmp_path / "generated.jsonl", VALIDATE, tmp_path / "kept.jsonl", tmp_path / "q.parquet")
    assert stats["rejected"] == 0 and stats["kept"] == len(generated)
    assert [v["name"] for v in stats["validators"]] == [
        "schema", "regulation_references_exist", "numbers_in_physical_range", "grounding", "triviality"]
    for ex in generated:
        cited = [g for g in json.loads(ex["grounding"]) if g["kind"] == "citation"]
        if ex["unanswerable_kind"] != "out_of_scope":
            assert cited and all(g["source_file"] and g["section_id"] and len(g["span"]) == 2 for g in cited)
            assert f"[source: {ex['source_file']} §{ex['section_id']}]" in ex["messages"][-1]["content"]
        fact = json.loads(ex["fact"])
        assert ex["span"] == fact["span"] and fact["text"]
    assert {e["category"] for e in generated} == {"qa", "compliance", "summary", "which_section"}
    assert {e["unanswerable_kind"] for e in generated} == {None, "insufficient_information", "human_review", "out_of_scope"}
    assert any(e["turns"] > 1 for e in generated)
    assert any(e["source_file"].endswith(".pdf") for e in generated) and any(e["source_file"].endswith(".txt") for e in generated)


def test_a_wrong_citation_is_rejected_with_its_reason(generated):
    ex = first(generated, "qa_requirement")
    answer = ex["messages"][-1]["content"]
    cite = f"[source: {ex['source_file']} §{ex['section_id']}]"
    verdict = validate_example(with_answer(ex, answer.replace(cite, f"[source: {ex['source_file']} §9.9]")), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "citation_not_found")
    assert "§9.9" in verdict.detail
    corpus = load_corpus(json.loads(ex["fact"])["corpus_index"])
    other = next(s for f, s in corpus.sections if f == ex["source_file"] and s != ex["section_id"])
    verdict = validate_example(with_answer(ex, answer.replace(cite, f"[source: {ex['source_file']} §{other}]")), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "citation_wrong_section")
    verdict = validate_example(with_answer(ex, answer.replace(cite, "")), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "missing_citation")
    # a section number named in the prose must exist too
    verdict = validate_example(with_answer(ex, answer.replace(cite, f"See also section 17.4. {cite}")), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "citation_not_found")


def test_an_unsupported_claim_is_rejected_with_its_reason(generated):
    ex = first(generated, "compliance_violation")
    answer = ex["messages"][-1]["content"]
    cite = f"[source: {ex['source_file']} §{ex['section_id']}]"
    claim = "Vessels must also display three red lights and keep a diver on standby."
    verdict = validate_example(with_answer(ex, answer.replace(cite, f"{claim} {cite}")), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "unsupported_claim")
    assert "diver" in verdict.detail
    # a number that neither the section nor the scenario states
    verdict = validate_example(with_answer(ex, answer.replace(cite, f"The log must be kept for 48 days. {cite}")), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "unsupported_number")
    # another section's answer under this section's citation
    donor = next(e for e in generated if e["form"] == "summary" and e["source_file"] != ex["source_file"] and e["turns"] == 1)
    foreign = re.sub(r"\[source: [^\]]+\]", cite, donor["messages"][-1]["content"])
    verdict = validate_example(with_answer(ex, foreign), VALIDATE)
    assert not verdict.keep and verdict.reason in ("unsupported_claim", "unsupported_number", "missing_required_value")
    # the MiniLM backstop on its own: the claim's key terms pass when the overlap rule is off
    lenient = VALIDATE.model_copy(update={"text_min_term_overlap": 0.0, "text_min_similarity": 0.5})
    limit = next(g["value"] for g in json.loads(ex["grounding"]) if g["name"] == "limit")
    off_topic = f"Limit {limit:g}. Galley menus and crew overtime pay follow the owners' catering policy. {cite}"
    verdict = TextGrounding(lenient).check(with_answer(ex, off_topic))
    assert (verdict.keep, verdict.reason) == (False, "unsupported_claim") and "cosine" in verdict.detail


def test_edge_cases_must_say_what_they_are(generated):
    ex = first(generated, "edge_insufficient_information")
    cite = f"[source: {ex['source_file']} §{ex['section_id']}]"
    verdict = validate_example(with_answer(ex, f"Compliant: the vessel meets section {ex['section_id']}. {cite}"), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "edge_case_not_flagged")
    ex = first(generated, "edge_out_of_scope")
    verdict = validate_example(with_answer(ex, ex["messages"][-1]["content"] + f" {cite}"), VALIDATE)
    assert (verdict.keep, verdict.reason) == (False, "out_of_scope_cites")
    ex = first(generated, "qa_definition")
    verdict = validate_example(with_answer(ex, "This is out of scope."), VALIDATE)
    assert not verdict.keep and verdict.reason in ("false_edge_case", "missing_citation")


def test_domain_validators_reject_a_regulation_that_does_not_exist_and_impossible_numbers(generated):
    ex = first(generated, "qa_reference")
    corpus = load_corpus(json.loads(ex["fact"])["corpus_index"])
    cite = f"[source: {ex['source_file']} §{ex['section_id']}]"
    made_up = with_answer(ex, f"Section {ex['section_id']} refers to 33 CFR 83.99. {cite}")
    verdict = regulation_references_exist(made_up, corpus)
    assert (verdict.keep, verdict.reason) == (False, "unknown_regulation") and "33 CFR 83.99" in verdict.detail
    assert (validate_example(made_up, VALIDATE).reason) == "unknown_regulation"  # the gate runs it before grounding
    for real in ("33 CFR 83.19", "SOLAS V/19-1", "MARPOL Annex VI/18", "33 CFR 83"):  # 33 CFR 83: the part of 83.06 ...
        assert regulation_references_exist(with_answer(ex, f"It cites {real}. {cite}"), corpus).keep, real
    assert not regulation_references_exist(with_answer(ex, f"It cites SOLAS V/99. {cite}"), corpus).keep
    fast = with_answer(ex, f"The speed shall be not more than 95 knots. {cite}")
    verdict = numbers_in_physical_range(fast, corpus)
    assert (verdict.keep, verdict.reason) == (False, "implausible_number") and "95 knots" in verdict.detail
    assert not numbers_in_physical_range(with_answer(ex, f"Fill to 130 per cent. {cite}"), corpus).keep
    assert numbers_in_physical_range(with_answer(ex, f"Fill to 90 per cent at 6 knots. {cite}"), corpus).keep
    with pytest.raises(ConfigError, match="cannot be imported"):
        validate_example(ex, VALIDATE.model_copy(update={"domain_validators": ["tasks.documents.validators.no_such"]}))
    with pytest.raises(ConfigError, match="dotted paths"):
        load_config(None, {"validate.domain_validators": ["not a path"]})


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_edge_case_share_matches_the_config(tmp_path, share):
    """Within 1 / max_seeds (rounding) of the configured share, overall and per kind; and the
    template shares of the answerable seeds within share_tolerance."""
    docs = CONFIG.documents.model_copy(update={"max_seeds": 150, "edge_case_share": share,
                                                "edge_case_kinds": {"insufficient_information": 0.5, "human_review": 0.3,
                                                                    "out_of_scope": 0.2}})
    seeds_path, generated_path = build(tmp_path, docs)
    seeds = read_document_seeds(seeds_path)
    n = len(seeds)
    assert n == 150
    kinds = Counter(s.edge_case for s in seeds if s.edge_case)
    assert abs(sum(kinds.values()) / n - share) <= 1 / n
    for kind, weight in docs.edge_case_kinds.items():
        assert abs(kinds[kind] / n - share * weight) <= 1 / n, kind
    assert all(not s.answerable for s in seeds if s.edge_case) and all(s.answerable for s in seeds if not s.edge_case)
    answerable = [s for s in seeds if s.answerable]
    for template, spec in docs.templates.items():
        assert abs(sum(s.category == template for s in answerable) / len(answerable) - spec.share) <= docs.share_tolerance
    # the examples keep their kind
    examples = read_jsonl(generated_path)
    assert Counter(e["unanswerable_kind"] for e in examples if e["unanswerable_kind"]) == kinds


def test_template_teacher_plants_errors_and_the_gate_catches_every_one(tmp_path):
    _, path = build(tmp_path, CONFIG.documents.model_copy(update={"max_seeds": 120}), corrupt_share=0.3)
    stats = validate_examples(path, VALIDATE, tmp_path / "kept.jsonl", tmp_path / "q.parquet")
    assert stats["planted_errors"] >= 15
    assert stats["planted_errors_caught"] == stats["planted_errors"]
    assert stats["rejected"] == stats["planted_errors"]  # and nothing else
    kinds = Counter(e["planted_error"] for e in read_jsonl(path) if e["planted_error"])
    assert set(kinds) == {"citation", "claim", "number"}


def test_split_keeps_each_section_on_one_side(generated, tmp_path):
    write_jsonl(generated, tmp_path / "kept.jsonl")
    stats = publish_dataset(tmp_path / "kept.jsonl", [], SplitConfig(eval_share=0.3), tmp_path / "dataset")
    examples = pd.read_parquet(tmp_path / "dataset" / "examples.parquet")
    sides = examples.groupby(["source_file", "section_id"])["split"].nunique()
    assert (sides == 1).all() and len(sides) > 10
    assert set(examples["split"]) == {"train", "eval"}
    manifest = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    assert not set(manifest["sections"]["train"]) & set(manifest["sections"]["eval"])
    assert stats["train_sections"] == len(manifest["sections"]["train"]) and stats["eval_sections"] > 0
    assert manifest["leak_check"]["shared_split_keys"] == 0
    # a which-section question shows sibling sections: none of their text crosses to the other side
    side = {f"doc:{f}#{s}": sp for f, s, sp in examples[["source_file", "section_id", "split"]].itertuples(index=False)}
    shown = [(list(keys), split) for keys, split in examples[["context_split_keys", "split"]].itertuples(index=False)
             if keys is not None and len(keys)]
    assert shown and all(side.get(k, split) == split for keys, split in shown for k in keys)
    quarantine = pd.read_parquet(tmp_path / "dataset" / "quarantine.parquet")
    crossed = quarantine[quarantine["reason"] == "split_context_crosses"]
    assert len(crossed) == stats["context_crossing_split"] > 0
    # by whole document
    by_doc = [{**e, "split_key": f"doc:{e['source_file']}"} for e in generated]
    write_jsonl(by_doc, tmp_path / "by_doc.jsonl")
    publish_dataset(tmp_path / "by_doc.jsonl", [], SplitConfig(eval_share=0.3), tmp_path / "dataset_by_doc")
    examples = pd.read_parquet(tmp_path / "dataset_by_doc" / "examples.parquet")
    assert (examples.groupby("source_file")["split"].nunique() == 1).all() and examples["split"].nunique() == 2


def test_an_llm_teacher_writes_document_examples_through_the_runner(tmp_path, monkeypatch):
    """OpenAI SDK against the loopback server, which answers with the draft in the prompt: the
    examples pass the text grounding, carry the model, and a second run is answered from the cache."""
    from tasks.llm.loopback import LoopbackLLM

    seeds_path, _ = build(tmp_path, CONFIG.documents.model_copy(update={"max_seeds": 30}))
    monkeypatch.setenv("TW_TEST_DOC_KEY", "sk-test-doc-0123456789")
    with LoopbackLLM() as srv:
        cfg = TeacherConfig.model_validate({
            "teachers": [{"name": "gpt", "kind": "openai", "model": "gpt-4o-mini", "base_url": srv.openai_base_url,
                          "api_key_env": "TW_TEST_DOC_KEY", "concurrency": 4}],
            "corrupt_share": 0.0, "backoff_base_s": 0.01, "timeout_s": 5})
        stats = generate_examples(seeds_path, cfg, 11, tmp_path / "llm.jsonl", tmp_path / "cache.sqlite",
                                  tmp_path / "ledger.jsonl", tmp_path / "q.parquet")
        first_calls = len(srv.requests)
        again = generate_examples(seeds_path, cfg, 11, tmp_path / "llm2.jsonl", tmp_path / "cache.sqlite",
                                  tmp_path / "ledger2.jsonl", tmp_path / "q2.parquet")
        assert len(srv.requests) == first_calls  # every answer from the cache
    assert stats["generated"] == 30 and stats["llm"]["calls"] >= 30 and again["llm"]["cache_hits"] == 30
    prompts = [r["messages"][-1]["content"] for r in srv.requests]
    assert any("Values and citation" in p and "End the answer with the citation [source:" in p for p in prompts)
    assert any("EDGE CASE on purpose" in p for p in prompts)
    examples = read_jsonl(tmp_path / "llm.jsonl")
    assert {e["prompt_version"] for e in examples} == {"documents-llm-v1"}
    assert {e["teacher_model"] for e in examples} == {"gpt-4o-mini"}
    verdicts = [validate_example(e, VALIDATE) for e in examples]
    assert all(v.keep for v in verdicts), [v for v in verdicts if not v.keep]
    assert "sk-test-doc" not in (tmp_path / "ledger.jsonl").read_text() + (tmp_path / "llm.jsonl").read_text()


def test_the_judge_prompt_carries_the_cited_section(generated):
    """What the LLM judge reads for a document example, graded by the loopback test judge."""
    from tasks.documents.teacher import document_judge_messages
    from tasks.llm.loopback import judge_responder

    ex = first(generated, "compliance_violation")
    messages = document_judge_messages(ex)
    prompt = messages[-1]["content"]
    assert json.loads(ex["fact"])["text"] in prompt and "- citation = " in prompt
    assert json.loads(judge_responder({"messages": messages}))["score"] == 5
    limit = next(g["value"] for g in json.loads(ex["grounding"]) if g["name"] == "limit")
    wrong = with_answer(ex, ex["messages"][-1]["content"].replace(f"{limit:g} ", f"{limit * 3:g} "))
    assert json.loads(judge_responder({"messages": document_judge_messages(wrong)}))["score"] == 1


def test_review_round_trip_checks_edits_with_the_text_grounding(generated, tmp_path):
    """Export a sample of a published document dataset, accept / reject / edit, import: a
    supported edit goes in, an edit with a claim the section does not make is refused."""
    import csv

    from tasks.config import ReviewConfig
    from tasks.errors import InputError
    from tasks.review import SAMPLE_CSV, export_review_sample, import_review

    write_jsonl(generated, tmp_path / "kept.jsonl")
    publish_dataset(tmp_path / "kept.jsonl", [], SplitConfig(eval_share=0.3), tmp_path / "dataset")
    review = ReviewConfig(share=0.1)
    export_review_sample(tmp_path / "dataset", review, tmp_path / "review")
    rows = list(csv.DictReader(open(tmp_path / "review" / SAMPLE_CSV, encoding="utf-8-sig")))
    answerable = [r for r in rows if r["answerable"] == "yes" and r["turns"] == "1"]
    accept, reject, edit = answerable[:3]
    accept["decision"] = "accept"
    reject.update(decision="reject", reason="wrong emphasis")
    edit.update(decision="edit", edited_answer="As section requires: " + edit["answer"])

    def write(rows_out: list[dict], name: str) -> Path:
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows_out)
        return path

    bad = dict(edit, edited_answer=edit["answer"].replace("[source:", "Divers must inspect the hull weekly. [source:"))
    with pytest.raises(InputError, match="unsupported_claim"):
        import_review(tmp_path / "dataset", write([accept, reject, bad], "bad.csv"), review, VALIDATE)
    stats = import_review(tmp_path / "dataset", write([accept, reject, edit], "good.csv"), review, VALIDATE)
    assert (stats["accepted"], stats["rejected"], stats["edited"]) == (1, 1, 1)
    examples = pd.read_parquet(tmp_path / "dataset" / "examples.parquet")
    assert reject["id"] not in set(examples["id"])
    edited = examples.set_index("id").loc[edit["id"]]
    assert json.loads(edited["messages"])[-1]["content"].startswith("As section requires: ")
