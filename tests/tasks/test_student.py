from __future__ import annotations

import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.config import StudentConfig
from tasks.student import build_tiny_student, hub_offline, resolve_student, train_tokenizer
from tests.tasks.conftest import corpus_of, make_ais_examples

AIS_TEXT = (
    "AIS records for vessel 366123456 (OCEAN TRADER):\ntime|lat|lon|sog|cog|status\n"
    "06:05:00|40.68512|-74.02131|12.4|87.5|under way using engine\n\n"
    "Question: What was the average speed?  Ünïcode ✓"
)


def test_tokenizer_round_trips_ais_text_and_keeps_chat_tokens_whole(tiny_student):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    ids = tokenizer(AIS_TEXT)["input_ids"]
    assert tokenizer.decode(ids) == AIS_TEXT
    # Digits are single tokens (as in Qwen2), so 12.4 and 124 never share a token.
    assert [tokenizer.decode([i]) for i in tokenizer("12.4")["input_ids"]] == ["1", "2", ".", "4"]
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tokenizer(special)["input_ids"]) == 1
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.decode(tokenizer("answer<|im_end|>")["input_ids"], skip_special_tokens=True) == "answer"


def test_saved_tokenizer_encodes_like_the_trained_one(tmp_path):
    corpus = corpus_of(make_ais_examples(20, seed=3))
    trained = train_tokenizer(corpus, vocab_size=512)
    trained.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in corpus[:10] + [AIS_TEXT]:
        assert loaded(text)["input_ids"] == trained(text)["input_ids"]


def test_chat_template_renders_chatml_with_generation_prompt(tiny_student):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Speed?"},
        {"role": "assistant", "content": "12.4 knots."},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSpeed?<|im_end|>\n"
        "<|im_start|>assistant\n12.4 knots.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSpeed?<|im_end|>\n<|im_start|>assistant\n"
    )
    # The assistant mask TRL trains on is the answer plus its end-of-turn token, nothing else.
    rendered = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    answer_ids = [i for i, keep in zip(rendered["input_ids"], rendered["assistant_masks"]) if keep]
    assert tokenizer.decode(answer_ids) == "12.4 knots.<|im_end|>"
    # The generation prompt tokenizes as a prefix of the full conversation (train/serve agree).
    prompt_ids = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)["input_ids"]
    assert rendered["input_ids"][: len(prompt_ids)] == prompt_ids


def test_tiny_student_has_the_configured_shape(tiny_student):
    cfg = StudentConfig()
    model = AutoModelForCausalLM.from_pretrained(tiny_student)
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    config = model.config
    assert config.model_type == "qwen2"
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        cfg.tiny_layers,
        cfg.tiny_hidden,
        cfg.tiny_heads,
    )
    assert config.intermediate_size == 4 * cfg.tiny_hidden
    assert config.max_position_embeddings >= 2048
    assert config.vocab_size == len(tokenizer) <= cfg.tiny_vocab
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_build_tiny_student_is_deterministic(tmp_path):
    cfg = StudentConfig(tiny_vocab=400)
    corpus = corpus_of(make_ais_examples(12, seed=5))
    first = build_tiny_student(cfg, corpus, tmp_path / "a", seed=1)
    second = build_tiny_student(cfg, corpus, tmp_path / "b", seed=1)
    other_seed = build_tiny_student(cfg, corpus, tmp_path / "c", seed=2)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    weights = [AutoModelForCausalLM.from_pretrained(path).state_dict() for path in (first, second, other_seed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights[0][q_proj], weights[2][q_proj])


def test_resolve_student_passes_a_configured_model_through(tmp_path):
    cfg = StudentConfig(base_model="Qwen/Qwen2.5-7B-Instruct")
    assert resolve_student(cfg, ["unused"], tmp_path / "student") == "Qwen/Qwen2.5-7B-Instruct"
    assert not (tmp_path / "student").exists()


def test_resolve_student_builds_the_tiny_one_by_default(tmp_path):
    path = resolve_student(StudentConfig(tiny_vocab=300), corpus_of(make_ais_examples(6)), tmp_path / "student")
    assert path == str(tmp_path / "student")
    assert json.loads((tmp_path / "student" / "config.json").read_text())["model_type"] == "qwen2"


def test_hub_offline_sets_and_restores_the_switches(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with hub_offline():
        assert os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "HF_DATASETS_OFFLINE" not in os.environ
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before

