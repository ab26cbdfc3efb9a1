"""Optional "already known" filter: drop examples the base student already answers correctly.

The base student (student.base_model) is prompted as it will be at deployment: its own chat
template over the example's system and user turns. Its greedy answer (reproducible) is then put
in place of the teacher's and checked with the grounding check the teacher's answer passed
(tasks/validate.py check_grounding, with the run's vessel and port names); an answer that passes
means the example teaches the student nothing -> quarantine `already_known`, the student's answer
as detail. In a dialogue every assistant turn is generated from the dialogue up to it (the
earlier answers are the dataset's), and the dialogue is known only when all of the student's
answers pass together.

With no student.base_model the student is the built-in tiny model with random weights, which
knows nothing: the stage says so and passes every example through, counted as skipped. Examples
past known.limit, and prompts that would not fit the model's context with max_new_tokens, pass
unchecked and are counted as skipped too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any


from tasks.artifacts import quarantine_row, read_jsonl, write_jsonl, write_quarantine
from tasks.config import KnownConfig, StudentConfig, ValidateConfig
from tasks.errors import ConfigError, InputError
from tasks.student import hub_offline, is_local_model
from tasks.validate import check_grounding, run_names

log = logging.getLogger(__name__)

# columns the check reads from each example
REQUIRED_COLUMNS = ("id", "messages", "grounding", "fact")
NO_BASE_MODEL = "no student.base_model: the built-in tiny student has random weights and knows nothing"


def _load_student(base_model: str) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    offline = hub_offline() if is_local_model(base_model) else contextlib.nullcontext()
    try:
        with offline:
            tokenizer = AutoTokenizer.from_pretrained(base_model)
            model = AutoModelForCausalLM.from_pretrained(
                base_model, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    except (OSError, ValueError) as exc:  # no such folder or hub id; a folder without a model
        raise ConfigError(
            f"student.base_model {base_model} cannot be loaded ({str(exc).splitlines()[0]}); point it at a saved "
            "model folder or a hub id already in the Hugging Face cache"
        ) from None
    if tokenizer.chat_template is None:
        raise ConfigError(
            f"student.base_model {base_model} has no chat template; the already-known check prompts it as deployed, "
            "so use an instruct/chat model"
        )
    return tokenizer, model.to(device).eval(), device


def greedy_answers(
    tokenizer: Any, model: Any, conversations: list[list[dict[str, str]]], max_new_tokens: int, batch_size: int,
) -> list[str | None]:
    """The model's greedy reply to each conversation (ending with a user turn), rendered with its
    chat template; None where prompt + max_new_tokens would not fit the model's context."""
    import torch
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generation = GenerationConfig(  # nothing inherited: a model's sampling defaults must not apply
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
        eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id,
    )
    prompts = [tokenizer(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"] for c in conversations]
    context = getattr(model.config, "max_position_embeddings", None)
    fits = [i for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: less padding
            if context is None or len(prompts[i]) + max_new_tokens <= context]
    answers: list[str | None] = [None] * len(prompts)
    for start in range(0, len(fits), batch_size):
        batch = fits[start:start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        # left padding: every prompt ends where generation starts
        ids = torch.tensor([[pad_id] * (width - len(prompts[i])) + prompts[i] for i in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch], device=model.device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=generation)
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    return answers


def _turn_prompts(example: dict[str, Any]) -> list[list[dict[str, str]]]:
    """One prompt per assistant turn: the dialogue up to it."""
    messages = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
    return [messages[:i] for i, m in enumerate(messages) if m["role"] == "assistant"]


def with_answers(example: dict[str, Any], answers: list[str]) -> dict[str, Any]:
    """A copy of the example whose assistant turns are `answers`, in order."""
    replies = iter(answers)
    messages = [{**m, "content": next(replies)} if m["role"] == "assistant" else m for m in example["messages"]]
    return {**example, "messages": messages}


def _check_columns(examples: list[dict[str, Any]], path: Path) -> None:
    for i, ex in enumerate(examples):
        missing = [c for c in REQUIRED_COLUMNS if c not in ex]
        if missing:
            raise InputError(f"{path}: example {i + 1} has no {', '.join(missing)}; the already-known check reads validated examples")


def known_examples(
    in_path: Path, cfg: KnownConfig, student: StudentConfig, validate: ValidateConfig, out_path: Path,
    quarantine_path: Path,
) -> dict[str, Any]:
    """Drop the examples of in_path that the base student already answers correctly; see the
    module docstring. Disabled, or with no student.base_model: a pass-through."""
    examples = read_jsonl(in_path)
    stats: dict[str, Any] = {"enabled": cfg.enabled, "input": len(examples)}
    if not cfg.enabled or not student.base_model:
        write_jsonl(examples, out_path)
        write_quarantine([], quarantine_path)
        if cfg.enabled:
            log.warning("already-known check skipped for %d examples: %s", len(examples), NO_BASE_MODEL)
        skipped = len(examples) if cfg.enabled else 0
        return {**stats, "kept": len(examples), "dropped": 0, "reasons": {}, "checked": 0, "skipped": skipped,
                "skip_reason": NO_BASE_MODEL if cfg.enabled else None}
    _check_columns(examples, Path(in_path))
    started = time.perf_counter()
    to_check = examples[: cfg.limit] if cfg.limit else examples
    prompts = [(n, p) for n, ex in enumerate(to_check) for p in _turn_prompts(ex)]
    tokenizer, model, device = _load_student(student.base_model)
    replies = greedy_answers(tokenizer, model, [p for _, p in prompts], cfg.max_new_tokens, cfg.batch_size)
    answers: dict[int, list[str | None]] = {}
    for (n, _), reply in zip(prompts, replies):
        answers.setdefault(n, []).append(reply)

    names = run_names(examples)  # another example's vessel or port named in an answer is a wrong one
    kept, rejected = [], []
    skipped: Counter[str] = Counter()
    for n, ex in enumerate(examples):
        mine = answers.get(n, [])
        if n >= len(to_check):
            skipped["over_limit"] += 1
        elif None in mine:
            skipped["prompt_too_long"] += 1
        else:
            texts = [a for a in mine if a is not None]
            if check_grounding(with_answers(ex, texts), validate, names).keep:
                record = {**ex, "student_answers": texts, "student_model": student.base_model}
                rejected.append(quarantine_row("known", "already_known", "\n".join(texts), record))
                continue
        kept.append(ex)
    write_jsonl(kept, out_path)
    write_quarantine(rejected, quarantine_path)
    log.info("already-known check with %s on %s: %d of %d checked examples known, %d skipped %s",
             student.base_model, device, len(rejected), len(to_check), sum(skipped.values()), dict(skipped))
    return {**stats, "kept": len(kept), "dropped": len(rejected),
            "reasons": {"already_known": len(rejected)} if rejected else {}, "checked": len(to_check) - skipped["prompt_too_long"],
            "skipped": sum(skipped.values()), "skip_reason": ", ".join(f"{k} ({v})" for k, v in sorted(skipped.items())) or None,
            "base_model": student.base_model, "device": device, "seconds": round(time.perf_counter() - started, 2)}
