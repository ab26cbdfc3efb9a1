"""The documents source: procedures, manuals and rules (Markdown, plain text, PDF) chunked along
their numbered sections, seed questions per instruction template with edge cases on purpose,
text grounding (citations and support) and domain validators."""

from typing import Any


def is_document(record: Any) -> bool:
    """A document seed or example (a dict or a seed object), as opposed to an AIS one."""
    domain = record.get("domain") if isinstance(record, dict) else getattr(record, "domain", None)
    return domain == "documents"
