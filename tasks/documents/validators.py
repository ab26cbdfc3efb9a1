"""Domain validators: small callables `(example, corpus) -> Verdict`, declared in the config by
dotted path (validate.domain_validators) and run by the quality gate after the schema check.
Each returns keep, or drop with a machine-readable reason; none raises on bad text.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from tasks.documents.grounding import Corpus
from tasks.documents.seeds import PHYSICAL_RANGES, UNITS, regulation_refs
from tasks.errors import ConfigError
from tasks.validate import Verdict

DomainValidator = Callable[[dict[str, Any], "Corpus | None"], Verdict]
QUANTITY_RE = re.compile(rf"(?<![\w.])(?P<num>\d+(?:,\d{{3}})*(?:\.\d+)?)\s+(?P<unit>{UNITS})\b", re.IGNORECASE)


def _texts(example: dict[str, Any], roles: tuple[str, ...]) -> list[str]:
    out = []
    for m in example.get("messages") or []:
        if m.get("role") in roles and isinstance(m.get("content"), str):
            out.append(m["content"].rsplit("Question:", 1)[-1] if m["role"] == "user" else m["content"])
    return out


def regulation_references_exist(example: dict[str, Any], corpus: Corpus | None) -> Verdict:
    """Every regulation reference an answer makes (33 CFR 83.15, SOLAS V/19, MARPOL Annex I) is
    made somewhere in the corpus; a number that no document cites is a made-up reference."""
    if corpus is None:
        return Verdict(True)
    for text in _texts(example, ("assistant",)):
        for ref in regulation_refs(text):
            if not corpus.has_reference(ref):
                return Verdict(False, "unknown_regulation", f"{ref} is not referenced anywhere in the corpus")
    return Verdict(True)


def numbers_in_physical_range(example: dict[str, Any], corpus: Corpus | None) -> Verdict:
    """Every quantity with a unit, in the questions' scenarios and in the answers, lies in the
    physical range of its unit (PHYSICAL_RANGES)."""
    for text in _texts(example, ("user", "assistant")):
        for m in QUANTITY_RE.finditer(text):
            unit = m["unit"].lower()
            value = float(m["num"].replace(",", ""))
            low, high = PHYSICAL_RANGES[unit]
            if not low <= value <= high:
                return Verdict(False, "implausible_number", f"{m['num']} {unit} is outside {low:g}-{high:g} {unit}")
    return Verdict(True)


def load_domain_validators(paths: list[str]) -> list[tuple[str, DomainValidator]]:
    """(name, callable) per dotted path; a path that does not import is a ConfigError."""
    out = []
    for path in paths:
        module_name, _, attr = path.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"validate.domain_validators: {path} cannot be imported ({exc}); give module.function, "
                              "e.g. tasks.documents.validators.regulation_references_exist") from None
        if not callable(fn):
            raise ConfigError(f"validate.domain_validators: {path} is not a function (example, corpus) -> Verdict")
        out.append((attr, fn))
    return out
