"""The "already known" filter with a real student: a tiny Qwen2 fully fine-tuned until it
reproduces the answers of a few examples, saved as a model folder and used as student.base_model.
Those examples must be dropped as already_known; examples it never saw must be kept."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.artifacts import read_jsonl, write_jsonl
from tasks.config import KnownConfig, StudentConfig, ValidateConfig
from tasks.errors import ConfigError
from tasks.known import NO_BASE_MODEL, known_examples
from tasks.student import END_OF_TURN, build_tiny_student
from tests.tasks.factories import example, movement_seed, port_seed, unanswerable_seed
from tests.tasks.test_judge import dialogue_seed

pytestmark = pytest.mark.slow


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A model this small gains nothing from intra-op threads, and on a shared 2-core machine the
    second thread spins waiting for the first: 20 training steps took 2 s on one thread, 10-22 s on two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def taught_and_unseen() -> tuple[list[dict], list[dict]]:
    """Examples the student is taught (a two-turn dialogue and a refusal among them), and examples
    of the same forms about other vessels and values that it never sees."""
    taught = [example(movement_seed()), example(port_seed("arrival")), example(dialogue_seed()),
              example(unanswerable_seed())]
    unseen = [example(movement_seed(mmsi=366000007, mean=8.81, hour=11)),
              example(port_seed("departure", mmsi=366000012)),
              example(movement_seed("distance_run", mmsi=366000008, dist=23.4, hour=14))]
    return taught, unseen


def training_rows(tokenizer, examples: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per assistant turn, prompted exactly as the check prompts the student."""
    rows = []
    for ex in examples:
        messages = [{"role": m["role"], "content": m["content"]} for m in ex["messages"]]
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = tokenizer(tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False),
                               add_special_tokens=False)["input_ids"]
            answer = tokenizer(m["content"] + END_OF_TURN, add_special_tokens=False)["input_ids"]
            rows.append((prompt + answer, [-100] * len(prompt) + answer))
    return rows


def memorise(model_dir: Path, examples: list[dict], out_dir: Path, max_steps: int = 300) -> None:
    """Full fine-tune until every answer token is the model's top choice with some margin (then
    greedy decoding reproduces every answer); saves the model folder to out_dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = training_rows(tokenizer, examples)
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(1, max_steps + 1):
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        target = labels[:, 1:]
        wrong = ((out.logits[:, :-1].argmax(-1) != target) & (target != -100)).sum()
        if wrong == 0 and out.loss.item() < 0.03:
            break
    else:
        raise AssertionError(f"the student did not memorise the answers in {max_steps} steps (loss {out.loss.item():.3f})")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


@pytest.fixture(scope="module")
def memorised(tmp_path_factory) -> tuple[Path, list[dict], list[dict], Path]:
    taught, unseen = taught_and_unseen()
    root = tmp_path_factory.mktemp("known")
    corpus = [m["content"] for ex in taught + unseen for m in ex["messages"]]
    base = build_tiny_student(StudentConfig(), corpus, root / "random", seed=0)
    memorise(base, taught, root / "student")
    write_jsonl(unseen[:2] + taught + unseen[2:], root / "validated.jsonl")
    return root / "student", taught, unseen, root / "validated.jsonl"


def test_examples_the_student_answers_correctly_are_dropped(tmp_path, memorised):
    student, taught, unseen, in_path = memorised
    cfg = KnownConfig(enabled=True, max_new_tokens=100, batch_size=4)
    stats = known_examples(in_path, cfg, StudentConfig(base_model=str(student)), ValidateConfig(),
                           tmp_path / "kept.jsonl", tmp_path / "q.parquet")

    assert [e["id"] for e in read_jsonl(tmp_path / "kept.jsonl")] == [e["id"] for e in unseen]  # order kept
    q = pd.read_parquet(tmp_path / "q.parquet")
    assert set(q["record_id"]) == {e["id"] for e in taught}
    assert set(q["reason"]) == {"already_known"} and set(q["stage"]) == {"known"}
    by_id = {e["id"]: e for e in taught}
    for _, row in q.iterrows():  # the detail is what the student wrote: the taught answers, turn by turn
        payload = json.loads(row["payload"])
        answers = [m["content"] for m in by_id[row["record_id"]]["messages"] if m["role"] == "assistant"]
        assert payload["student_answers"] == answers and payload["rejection_detail"] == "\n".join(answers)
    assert (stats["input"], stats["kept"], stats["dropped"], stats["checked"], stats["skipped"]) == (7, 3, 4, 7, 0)
    assert stats["reasons"] == {"already_known": 4} and stats["device"] == ("cuda" if cuda_available() else "cpu")


def test_limit_and_context_decide_what_is_checked(tmp_path, memorised):
    student, taught, unseen, in_path = memorised
    base = StudentConfig(base_model=str(student))
    # the first three examples of the file: two unseen, one taught
    stats = known_examples(in_path, KnownConfig(enabled=True, limit=3, max_new_tokens=100), base, ValidateConfig(),
                           tmp_path / "kept.jsonl", tmp_path / "q.parquet")
    assert (stats["checked"], stats["dropped"], stats["skipped"]) == (3, 1, 4)
    assert stats["skip_reason"] == "over_limit (4)"
    assert list(pd.read_parquet(tmp_path / "q.parquet")["record_id"]) == [taught[0]["id"]]
    # answers that could not fit the tiny model's 2048-token context are not guessed at
    stats = known_examples(in_path, KnownConfig(enabled=True, max_new_tokens=2040), base, ValidateConfig(),
                           tmp_path / "kept2.jsonl", tmp_path / "q2.parquet")
    assert (stats["kept"], stats["dropped"], stats["skipped"]) == (7, 0, 7)
    assert stats["skip_reason"] == "prompt_too_long (7)"


def test_without_a_base_model_everything_passes_and_the_stage_says_why(tmp_path, memorised, caplog):
    _, _, _, in_path = memorised
    stats = known_examples(in_path, KnownConfig(enabled=True), StudentConfig(), ValidateConfig(),
                           tmp_path / "kept.jsonl", tmp_path / "q.parquet")
    assert read_jsonl(tmp_path / "kept.jsonl") == read_jsonl(in_path)
    assert (stats["kept"], stats["dropped"], stats["skipped"], stats["skip_reason"]) == (7, 0, 7, NO_BASE_MODEL)
    assert "random weights" in caplog.text and pd.read_parquet(tmp_path / "q.parquet").empty


def test_a_base_model_that_cannot_be_loaded_is_a_config_error(tmp_path, memorised):
    _, _, _, in_path = memorised
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="student.base_model .*empty cannot be loaded"):
        known_examples(in_path, KnownConfig(enabled=True), StudentConfig(base_model=str(tmp_path / "empty")),
                       ValidateConfig(), tmp_path / "kept.jsonl", tmp_path / "q.parquet")
