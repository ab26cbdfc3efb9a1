"""Chunking documents along their headings and numbered sections.

A file's text is the file itself (Markdown, plain text) or pypdf's extracted text (PDF); every
span is a character offset into that text. Headings are Markdown `#` lines, or in plain text and
PDF a line "3.2 Title" (a section number, a short title without a full stop). A section's id is
its number ("3.2") or, for an unnumbered heading, the slug of its title, so an edit elsewhere in
the file never changes it; the hierarchy path is the titles from the document title down.

A section longer than `chunk_chars` is cut at sentence ends into chunks that repeat about
`overlap_chars` of the previous one. Files are chunked once per content digest: the store keeps
a manifest (file -> sha256, chunker settings) and each file's chunks, and a refresh re-chunks
only the files whose digest or the settings changed. The run gets sections.jsonl (every section,
citable) and chunks.jsonl (sections with text, cut to size); the store keeps a copy of the sections
named by their content, which examples name as their corpus index.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task

from tasks.artifacts import write_jsonl
from tasks.config import DocumentsConfig
from tasks.errors import InputError

CHUNKER_VERSION = 1
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".pdf": "pdf"}
MD_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# "3", "3.2", "3.2.1" then a title: at most two digits per level, a capital first, no full stop
NUMBERED_RE = re.compile(r"^(\d{1,2}(?:\.\d{1,2})*)\.?[ \t]+([A-Z][^\n]{0,70}?)[ \t]*$", re.MULTILINE)
NUMBER_PREFIX_RE = re.compile(r"^(\d{1,2}(?:\.\d{1,2})*)\.?\s+(.+)$")
SENTENCE_END_RE = re.compile(r"(?<=[.;:!?])\s+(?=[A-Z\"(*])|\n\s*\n")


@dataclass(frozen=True)
class Section:
    source_file: str       # path relative to the corpus folder
    section_id: str        # "3.2", or the title's slug for an unnumbered heading
    title: str
    path: list[str]        # document title > ... > this title
    level: int
    start: int             # span of heading and body in the file's text
    end: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def file_text(path: Path) -> str:
    """The text spans refer to: the file (UTF-8) or, for a PDF, pypdf's text of its pages."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: documents must be .md, .markdown, .txt or .pdf")
    if kind != "pdf":
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        return "\n".join((page.extract_text() or "").rstrip() for page in reader.pages)
    except (PdfReadError, ValueError, OSError) as exc:
        raise InputError(f"{path} cannot be read as a PDF ({str(exc).splitlines()[0]}); re-export it or remove it") from None


def _headings(text: str, kind: str) -> list[tuple[int, int, int, str]]:
    """(start, end of the heading line, level, title) in order."""
    out = []
    if kind == "markdown":
        in_fence = False
        for line in re.finditer(r"^.*$", text, re.MULTILINE):
            if line.group().lstrip().startswith("```"):
                in_fence = not in_fence
                continue
            m = MD_HEADING_RE.match(line.group())
            if m and not in_fence:
                out.append((line.start(), line.end(), len(m.group(1)), m.group(2).strip()))
        return out
    for m in NUMBERED_RE.finditer(text):
        number, title = m.group(1), m.group(2)
        if len(title.split()) <= 8 and not title.endswith("."):
            out.append((m.start(), m.end(), number.count(".") + 1, f"{number} {title.strip()}"))
    return out


def parse_sections(text: str, source_file: str, kind: str) -> list[Section]:
    """The file's sections, each from its heading to the next heading. In plain text and PDF the
    first non-empty line before any numbered heading is the document title."""
    heads = _headings(text, kind)
    doc_title = None
    if kind != "markdown":
        first = re.search(r"\S[^\n]*", text[: heads[0][0]] if heads else text)
        if first:
            doc_title = first.group().strip()
    elif heads and heads[0][2] == 1:
        doc_title = heads[0][3]
    doc_title = doc_title or Path(source_file).stem
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the open ancestors
    used: dict[str, int] = {}
    for i, (start, _, level, title) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        m = NUMBER_PREFIX_RE.match(title)
        base = m.group(1) if m else slug(title)
        used[base] = used.get(base, 0) + 1
        section_id = base if used[base] == 1 else f"{base}-{used[base]}"
        chain = [t for _, t in stack] + [title]
        body = text[start:heads[i + 1][0] if i + 1 < len(heads) else len(text)].rstrip()
        sections.append(Section(source_file, section_id, title, chain if chain[0] == doc_title else [doc_title] + chain,
                                level, start, start + len(body), body))
        stack.append((level, title))
    if not sections and text.strip():
        body = text.rstrip()
        sections.append(Section(source_file, "1", doc_title, [doc_title], 1, 0, len(body), body))
    return sections


def chunk_spans(text: str, start: int, end: int, chunk_chars: int, overlap_chars: int) -> list[tuple[int, int]]:
    """[start, end) cut into spans of at most chunk_chars, at sentence ends where one is close,
    each repeating about overlap_chars of the one before."""
    if end - start <= chunk_chars:
        return [(start, end)]
    bounds = sorted({start + m.end() for m in SENTENCE_END_RE.finditer(text[start:end])} | {end})
    spans, lo = [], start
    while lo < end:
        limit = lo + chunk_chars
        if limit >= end:
            spans.append((lo, end))
            break
        fits = [b for b in bounds if lo + chunk_chars // 3 <= b <= limit]
        hi = fits[-1] if fits else limit
        spans.append((lo, hi))
        back = [b for b in bounds if hi - overlap_chars <= b < hi and b > lo]
        lo = back[0] if back and overlap_chars else max(hi - overlap_chars, lo + 1)
    return spans


def chunk_file(path: Path, source_file: str, digest: str, cfg: DocumentsConfig) -> tuple[list[dict], list[dict]]:
    """(sections, chunks) of one file; chunks are sections with a body, cut to chunk_chars."""
    kind = SUFFIXES[path.suffix.lower()]
    text = file_text(path)
    sections = parse_sections(text, source_file, kind)
    section_rows, chunks = [], []
    for s in sections:
        section_rows.append({**s.to_dict(), "file_digest": digest, "kind": kind})
        body_start = s.start + len(s.text.split("\n", 1)[0])
        if not text[body_start:s.end].strip():
            continue  # a heading with only subsections under it
        for n, (lo, hi) in enumerate(chunk_spans(text, s.start, s.end, cfg.chunk_chars, cfg.overlap_chars), start=1):
            chunks.append({"chunk_id": f"{source_file}#{s.section_id}~{n}", "source_file": source_file,
                           "section_id": s.section_id, "title": s.title, "path": s.path, "level": s.level,
                           "chunk": n, "start": lo, "end": hi, "text": text[lo:hi], "file_digest": digest, "kind": kind})
    return section_rows, chunks


def corpus_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"documents folder {folder} does not exist; set source.path to a folder of .md, .txt or .pdf files")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise InputError(f"{folder} holds no .md, .markdown, .txt or .pdf file; add documents or point source.path elsewhere")
    return files


def _settings(cfg: DocumentsConfig) -> dict[str, int]:
    return {"version": CHUNKER_VERSION, "chunk_chars": cfg.chunk_chars, "overlap_chars": cfg.overlap_chars}


def _writer() -> str:
    """A temporary-file suffix of this process and thread: runs of different lines share the store."""
    return f"{os.getpid()}.{threading.get_ident()}"


def chunk_corpus(folder: Path, cfg: DocumentsConfig, store_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Chunk every document of folder into out_dir (sections.jsonl, chunks.jsonl), re-chunking
    only files whose digest (or the chunker settings) changed since the store's manifest."""
    folder, store_dir, out_dir = Path(folder), Path(store_dir), Path(out_dir)
    # one manifest per corpus folder: document lines sharing a store never overwrite each other's
    manifest_path = store_dir / "manifests" / f"{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]}.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"files": {}}
    settings = _settings(cfg)
    files: dict[str, Any] = {}
    rechunked, reused = [], []
    all_sections, all_chunks = [], []
    for path in corpus_files(folder):
        source_file = path.relative_to(folder).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        # the name too: stored rows carry source_file and chunk ids, so two identical files are two entries
        key = hashlib.sha256(json.dumps([source_file, digest, settings], sort_keys=True).encode()).hexdigest()[:20]
        stored = store_dir / "chunks" / f"{key}.json"
        entry = manifest["files"].get(source_file)
        if entry and entry.get("key") == key and stored.is_file():
            cached = json.loads(stored.read_text())
            sections, chunks = cached["sections"], cached["chunks"]
            reused.append(source_file)
        else:
            sections, chunks = chunk_file(path, source_file, digest, cfg)
            stored.parent.mkdir(parents=True, exist_ok=True)
            tmp = stored.with_name(f"{stored.name}.{_writer()}.tmp")
            tmp.write_text(json.dumps({"sections": sections, "chunks": chunks}))
            tmp.replace(stored)
            rechunked.append(source_file)
        files[source_file] = {"digest": digest, "key": key, "sections": len(sections), "chunks": len(chunks)}
        all_sections += sections
        all_chunks += chunks
    removed = sorted(set(manifest["files"]) - set(files))
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest_path.with_name(f"{manifest_path.name}.{_writer()}.tmp")
    tmp.write_text(json.dumps({"settings": settings, "files": files}, indent=2))
    tmp.replace(manifest_path)
    write_jsonl(all_sections, out_dir / "sections.jsonl")
    write_jsonl(all_chunks, out_dir / "chunks.jsonl")
    # the index examples point at (citations must name a section in it): named by its content in
    # the store, so examples of different runs over the same corpus share one path outside any run
    content = (out_dir / "sections.jsonl").read_bytes()
    index_path = store_dir / "index" / f"sections-{hashlib.sha256(content).hexdigest()[:20]}.jsonl"
    if not index_path.is_file():
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_name(f"{index_path.name}.{_writer()}.tmp")
        tmp.write_bytes(content)
        tmp.replace(index_path)
    return {"folder": str(folder), "files": len(files), "rechunked": rechunked, "reused": reused, "removed": removed,
            "sections": len(all_sections), "chunks": len(all_chunks), "per_file": files, "chunk_chars": cfg.chunk_chars,
            "overlap_chars": cfg.overlap_chars, "sections_path": str(out_dir / "sections.jsonl"),
            "chunks_path": str(out_dir / "chunks.jsonl"), "index_path": str(index_path)}


chunk_task = task(name="chunk-documents")(chunk_corpus)
