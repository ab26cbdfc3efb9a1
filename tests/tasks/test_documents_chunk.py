"""Chunking documents: stable section ids, hierarchy paths, spans, size and overlap, PDF and plain
text, and a store that re-chunks only the files that changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.artifacts import read_jsonl
from tasks.config import DocumentsConfig, load_config
from tasks.documents.chunk import chunk_corpus, file_text
from tasks.documents.corpus import write_example_corpus
from tasks.errors import ConfigError, InputError

MANUAL = """\
# Mooring Manual

## 1 Scope

This manual applies to every berth of the terminal.

## 2 Lines

### 2.1 Number of lines

At least 4 head lines and 4 stern lines shall be set. Lines shall be tended every 30 minutes.

### 2.2 Line condition

A line with broken strands shall be replaced before the next tide.

## Emergency release

The quick-release hooks shall be tested before every arrival.
"""


def sections_by_id(out: Path) -> dict[tuple[str, str], dict]:
    return {(s["source_file"], s["section_id"]): s for s in read_jsonl(out / "sections.jsonl")}


def test_section_ids_and_text_stay_when_the_file_is_edited_elsewhere(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "mooring.md").write_text(MANUAL)
    cfg = DocumentsConfig()
    chunk_corpus(corpus, cfg, tmp_path / "store", tmp_path / "v1")
    before = sections_by_id(tmp_path / "v1")

    inserted = "It also applies to lay-by berths and to vessels moored alongside another vessel.\n\n"
    edited = MANUAL.replace("This manual applies to every berth of the terminal.\n\n",
                            "This manual applies to every berth of the terminal.\n\n" + inserted)
    (corpus / "mooring.md").write_text(edited)
    stats = chunk_corpus(corpus, cfg, tmp_path / "store", tmp_path / "v2")
    after = sections_by_id(tmp_path / "v2")

    assert stats["rechunked"] == ["mooring.md"]
    assert set(before) == set(after) == {("mooring.md", i) for i in
                                         ("mooring-manual", "1", "2", "2.1", "2.2", "emergency-release")}
    for key in (("mooring.md", "2.1"), ("mooring.md", "2.2"), ("mooring.md", "emergency-release")):
        assert after[key]["text"] == before[key]["text"]
        assert after[key]["start"] == before[key]["start"] + len(inserted)  # the span moved with the text
        assert after[key]["path"] == before[key]["path"]
    assert after[("mooring.md", "2.1")]["path"] == ["Mooring Manual", "2 Lines", "2.1 Number of lines"]
    assert after[("mooring.md", "1")]["text"] != before[("mooring.md", "1")]["text"]
    text = (corpus / "mooring.md").read_text()
    for s in after.values():
        assert text[s["start"]:s["end"]] == s["text"]


def test_only_changed_files_are_rechunked_and_removed_ones_leave(tmp_path):
    corpus = write_example_corpus(tmp_path / "corpus")[0].parent
    cfg = DocumentsConfig()
    first = chunk_corpus(corpus, cfg, tmp_path / "store", tmp_path / "run1")
    assert len(first["rechunked"]) == 5 and first["reused"] == []
    # the built-in corpus is written again byte for byte (the PDF has no creation date): nothing to do
    write_example_corpus(corpus)
    second = chunk_corpus(corpus, cfg, tmp_path / "store", tmp_path / "run2")
    assert second["rechunked"] == [] and len(second["reused"]) == 5
    assert (tmp_path / "run1" / "chunks.jsonl").read_text() == (tmp_path / "run2" / "chunks.jsonl").read_text()

    path = corpus / "bunkering.txt"
    path.write_text(path.read_text().replace("not more than 100 cubic metres", "not more than 120 cubic metres"))
    (corpus / "ais_reporting.md").unlink()
    third = chunk_corpus(corpus, cfg, tmp_path / "store", tmp_path / "run3")
    assert third["rechunked"] == ["bunkering.txt"] and third["removed"] == ["ais_reporting.md"]
    assert sorted(third["reused"]) == ["anchoring.md", "collision_avoidance.md", "port_entry.pdf"]
    assert any("120 cubic metres" in c["text"] for c in read_jsonl(tmp_path / "run3" / "chunks.jsonl"))
    # other chunk settings are another chunking: every file again
    fourth = chunk_corpus(corpus, DocumentsConfig(chunk_chars=300, overlap_chars=50), tmp_path / "store", tmp_path / "run4")
    assert len(fourth["rechunked"]) == 4


def test_pdf_and_plain_text_are_cut_at_numbered_sections(tmp_path):
    corpus = write_example_corpus(tmp_path / "corpus")[0].parent
    chunk_corpus(corpus, DocumentsConfig(), tmp_path / "store", tmp_path / "out")
    sections = sections_by_id(tmp_path / "out")
    pdf = {sid: s for (f, sid), s in sections.items() if f == "port_entry.pdf"}
    assert sorted(pdf) == ["1", "1.1", "1.2", "2", "3", "4", "5"]
    assert pdf["1.1"]["path"] == ["PORT ENTRY AND PILOTAGE", "1 PILOT BOARDING", "1.1 Boarding speed"]
    assert "not more than 8 knots" in pdf["1.1"]["text"] and pdf["1.1"]["kind"] == "pdf"
    # spans index the PDF's extracted text
    text = file_text(corpus / "port_entry.pdf")
    assert text[pdf["4"]["start"]:pdf["4"]["end"]] == pdf["4"]["text"]
    txt = sections[("bunkering.txt", "4.1")]
    assert txt["path"] == ["BUNKERING OPERATIONS PROCEDURE", "4 DURING TRANSFER", "4.1 Pumping rate"]
    assert "400 cubic metres per hour" in txt["text"]
    # a heading with only subsections under it is a section (it can be cited) but gives no chunk
    chunks = read_jsonl(tmp_path / "out" / "chunks.jsonl")
    assert ("bunkering.txt", "4") in sections and not any(c["section_id"] == "4" and c["source_file"] == "bunkering.txt" for c in chunks)


def test_long_sections_are_cut_at_sentence_ends_with_overlap(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sentences = [f"Rule {i}: the bosun shall inspect mooring line number {i} and record its condition." for i in range(1, 25)]
    (corpus / "long.md").write_text("# Long\n\n## 1 Inspections\n\n" + " ".join(sentences) + "\n")
    cfg = DocumentsConfig(chunk_chars=300, overlap_chars=90)
    chunk_corpus(corpus, cfg, tmp_path / "store", tmp_path / "out")
    chunks = [c for c in read_jsonl(tmp_path / "out" / "chunks.jsonl") if c["section_id"] == "1"]
    text = (corpus / "long.md").read_text()
    assert len(chunks) >= 4
    section = sections_by_id(tmp_path / "out")[("long.md", "1")]
    assert chunks[0]["start"] == section["start"] and chunks[-1]["end"] == section["end"]
    for a, b in zip(chunks, chunks[1:]):
        assert a["end"] - a["start"] <= cfg.chunk_chars
        assert 0 < a["end"] - b["start"] <= cfg.overlap_chars  # overlapping, not more than asked
        assert text[b["start"]:b["start"] + 5] == "Rule "  # cut at a sentence start
    assert [c["chunk"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert all(text[c["start"]:c["end"]] == c["text"] for c in chunks)


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .md"):
        chunk_corpus(tmp_path / "empty", DocumentsConfig(), tmp_path / "store", tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        chunk_corpus(tmp_path / "missing", DocumentsConfig(), tmp_path / "store", tmp_path / "out")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.pdf").write_bytes(b"not a pdf at all")
    with pytest.raises(InputError, match="cannot be read as a PDF"):
        chunk_corpus(tmp_path / "bad", DocumentsConfig(), tmp_path / "store", tmp_path / "out")
    with pytest.raises(ConfigError, match="overlap_chars"):
        load_config(None, {"documents.chunk_chars": 300, "documents.overlap_chars": 300})
    with pytest.raises(ConfigError, match="templates names"):
        load_config(None, {"documents": {"templates": {"essay": {"share": 1, "instruction": "Write."}}}})
    assert json.loads(json.dumps(load_config("pipeline_configs/maritime_ops.yaml").documents.model_dump(mode="json")))
