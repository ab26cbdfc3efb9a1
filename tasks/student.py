"""The student model: the user's own (a hub id or local path) or a tiny Qwen2 built offline.

No pretrained weights can be fetched on an offline machine, so the default student is a small
`Qwen2ForCausalLM` with random weights and a byte-level BPE tokenizer trained on the dataset's
own text. It has the same interface as a real Qwen2.5 instruct model (ChatML template,
`<|im_end|>` as end of turn), so training and evaluation run the same code path for both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tasks.config import StudentConfig

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, _, END_OF_TURN = SPECIAL_TOKENS

# The pre-tokenizer split of Qwen2's tokenizer: digits stand alone (numbers are read digit by
# digit, as the real Qwen2.5 student reads them, so an AIS table costs about as many tokens here
# as there: ~1.5 characters per token) and a newline is never merged with the word after it, so
# "<|im_start|>assistant\n" tokenizes the same alone and followed by an answer (the prompt is a
# token prefix of prompt + answer).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML as Qwen2.5 writes it. The assistant's content and its <|im_end|> sit inside
# {% generation %} so TRL's assistant-only loss trains the answer and the stop token, nothing else.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Context of the tiny model: train.max_length up to 2048, and lm-eval prompts of up to
# 2048 - max_gen_toks tokens (lm-eval cuts longer ones from the left).
TINY_MAX_POSITIONS = 2048

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Forbid hub access (models, tokenizers, datasets) for the duration, then restore.

    huggingface_hub and datasets read their offline switches once, at import; a flow has
    usually imported them before this runs, so the module flags are set along with the env.
    """
    import datasets.config
    import huggingface_hub.constants

    saved_env = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    saved_flags = (
        huggingface_hub.constants.HF_HUB_OFFLINE,
        datasets.config.HF_HUB_OFFLINE,
        datasets.config.HF_DATASETS_OFFLINE,
    )
    os.environ.update({name: "1" for name in _OFFLINE_ENV})
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        (
            huggingface_hub.constants.HF_HUB_OFFLINE,
            datasets.config.HF_HUB_OFFLINE,
            datasets.config.HF_DATASETS_OFFLINE,
        ) = saved_flags


def is_local_model(model: str) -> bool:
    """True for a model folder on disk (the tiny student, a downloaded model), False for a hub id."""
    return Path(model).is_dir()


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (Qwen2 pre-tokenization) with the ChatML template, as a HF tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=END_OF_TURN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=CHATML_TEMPLATE,
        model_max_length=TINY_MAX_POSITIONS,
        padding_side="right",
    )


def build_tiny_student(cfg: StudentConfig, corpus: Iterable[str], out_dir: Path, seed: int = 0) -> Path:
    """Train a tokenizer on `corpus`, build a randomly initialised tiny Qwen2 and save both to out_dir.

    Same corpus and seed give the same tokenizer and the same weights.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus, cfg.tiny_vocab)
    eos_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        # The embedding matrix matches the tokenizer exactly: lm-eval resizes embeddings when they
        # differ, which would break loading a LoRA adapter on top.
        vocab_size=len(tokenizer),
        hidden_size=cfg.tiny_hidden,
        intermediate_size=4 * cfg.tiny_hidden,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        num_key_value_heads=cfg.tiny_heads,
        max_position_embeddings=TINY_MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    # Weight init draws from torch's global generator; fork it so the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def resolve_student(cfg: StudentConfig, corpus: Iterable[str], out_dir: Path) -> str:
    """The student to fine-tune: cfg.base_model as given, else a tiny one built in out_dir."""
    if cfg.base_model:
        return cfg.base_model
    return str(build_tiny_student(cfg, corpus, Path(out_dir)))
