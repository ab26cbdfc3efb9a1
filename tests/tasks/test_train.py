from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoTokenizer

from tasks.config import TrainConfig
from tasks.errors import ConfigError, InputError
from tasks.train import build_trainer, read_conversations, train_lora, train_task
from tests.conftest import REPO
from tests.tasks.conftest import make_ais_examples, write_jsonl

pytestmark = pytest.mark.slow

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model trains on one thread here. Runs that are compared then sum in the same order
    in every kernel, and on the 2 shared cores of the test machines a 2-thread run of this tiny
    model is about 6x slower whenever another process is busy (OpenMP threads wait on each other
    at every op); one thread is not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_student, chat_dataset, small_train_config):
    trainer, method = build_trainer(
        small_train_config, str(tiny_student), chat_dataset["train"], None, tmp_path_factory.mktemp("trainer")
    )
    assert method == "lora"  # no CUDA on the test machines
    return trainer


def test_labels_mask_everything_but_the_assistant_answer(trainer, tiny_student, chat_dataset):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    conversations = read_conversations(chat_dataset["train"])
    assert len(trainer.train_dataset) == len(conversations)  # nothing lost to max_length
    for row, conversation in zip(trainer.train_dataset, conversations):
        messages = conversation["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)
        prompt_ids = prompt["input_ids"]
        # The trained sequence is the deployment prompt followed by the answer.
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids
        assert set(row["labels"][: len(prompt_ids)]) == {-100}
        trained_on = [label for label in row["labels"] if label != -100]
        assert tokenizer.decode(trained_on) == messages[-1]["content"] + "<|im_end|>"


def test_a_collated_batch_keeps_the_mask(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == -100).all()
    assert ((batch["labels"] == -100).sum(dim=1) > 0).all()


def test_training_moves_lora_weights_and_leaves_base_weights(trainer):
    lora_names = {name for name, _ in trainer.model.named_parameters() if "lora_" in name}
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora_names} == PROJECTIONS
    assert all(param.requires_grad == (name in lora_names) for name, param in trainer.model.named_parameters())
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    for name, param in before.items():
        if name in lora_names:
            assert not torch.equal(param, after[name]), f"{name} did not train"
        else:
            assert torch.equal(param, after[name]), f"frozen {name} changed"


def test_train_lora_writes_an_adapter_and_reports_the_run(trained, small_train_config):
    result, out_dir = trained
    assert result.adapter_dir == out_dir / "adapter"
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert {module.rsplit(".", 1)[-1] for module in adapter_config["target_modules"]} == PROJECTIONS
    assert adapter_config["r"] == small_train_config.lora_r
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert (result.adapter_dir / "tokenizer.json").is_file()
    assert result.steps == small_train_config.max_steps
    assert math.isfinite(result.train_loss) and result.eval_loss is not None and math.isfinite(result.eval_loss)
    assert (result.method, result.device, result.examples) == ("lora", "cpu", 48)
    assert (out_dir / f"checkpoint-{small_train_config.max_steps}").is_dir()
    # save_steps and eval_steps (25) exceed the run: the one eval loss is the last step's
    assert result.eval_losses == [(result.steps, result.eval_loss)]
    assert result.merged_dir is None and not (out_dir / "merged").exists()


def test_trained_adapter_loads_on_the_unchanged_base(trained, tiny_student):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _ = trained
    base_weights = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(tiny_student).state_dict().items()}
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_student), result.adapter_dir)
    lora_b = [param for name, param in tuned.named_parameters() if "lora_B" in name]
    assert lora_b and any(param.abs().sum() > 0 for param in lora_b)  # B starts at zero: it moved
    merged = tuned.merge_and_unload().state_dict()
    assert torch.equal(base_weights["model.embed_tokens.weight"], merged["model.embed_tokens.weight"])
    assert not torch.equal(
        base_weights["model.layers.0.self_attn.q_proj.weight"], merged["model.layers.0.self_attn.q_proj.weight"]
    )


def test_a_second_call_resumes_from_the_last_checkpoint(
    trained, small_train_config, tmp_path, tiny_student, chat_dataset, caplog
):
    first, first_dir = trained
    out_dir = tmp_path / "train"
    shutil.copytree(first_dir, out_dir)
    longer = small_train_config.model_copy(update={"max_steps": first.steps + 2})
    with caplog.at_level(logging.INFO, logger="tasks.train"):
        result = train_lora(longer, str(tiny_student), chat_dataset["train"], chat_dataset["eval"], out_dir)
    assert f"resuming from {out_dir / f'checkpoint-{first.steps}'}" in caplog.text
    assert result.steps == first.steps + 2
    state = json.loads((out_dir / f"checkpoint-{result.steps}" / "trainer_state.json").read_text())
    first_state = json.loads((first_dir / f"checkpoint-{first.steps}" / "trainer_state.json").read_text())
    # The history of the first run is carried over verbatim (a fresh run with a longer schedule
    # would log a different loss at the last shared step), then the run goes on.
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    first_logged = [entry for entry in first_state["log_history"] if "loss" in entry]
    assert logged[: len(first_logged)] == first_logged
    assert logged[-1]["step"] == result.steps


def test_bad_training_files_raise_input_errors(tmp_path, tiny_student):
    cfg = TrainConfig(max_steps=1)
    with pytest.raises(InputError, match="does not exist"):
        train_lora(cfg, str(tiny_student), tmp_path / "missing.jsonl", tmp_path / "eval.jsonl", tmp_path / "out")
    example = make_ais_examples(1)[0]
    example["messages"] = example["messages"][:-1]
    no_answer = write_jsonl(tmp_path / "no_answer.jsonl", [example])
    with pytest.raises(InputError, match="no_answer.jsonl:1: the last turn must be the assistant"):
        train_lora(cfg, str(tiny_student), no_answer, no_answer, tmp_path / "out")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(InputError, match="holds no examples"):
        train_lora(cfg, str(tiny_student), empty, empty, tmp_path / "out")


def test_train_task_wraps_train_lora():
    assert train_task.name == "train-lora"
    assert train_task.fn is train_lora


def test_a_finished_run_is_restored_not_trained_further(
    trained, small_train_config, tmp_path, tiny_student, chat_dataset
):
    from peft.utils import load_peft_weights

    first, first_dir = trained
    out_dir = tmp_path / "train"
    shutil.copytree(first_dir, out_dir)
    shutil.rmtree(out_dir / "adapter")
    again = train_lora(small_train_config, str(tiny_student), chat_dataset["train"], chat_dataset["eval"], out_dir)
    assert again.steps == first.steps
    assert (again.train_seconds, again.tokens, again.eval_losses) == (0.0, first.tokens, first.eval_losses)
    assert not (out_dir / f"checkpoint-{first.steps + 1}").exists()
    assert again.train_loss == first.train_loss and again.eval_loss == pytest.approx(first.eval_loss)
    restored, original = load_peft_weights(str(again.adapter_dir)), load_peft_weights(str(first.adapter_dir))
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[name], original[name]) for name in original)


def test_a_max_length_that_cuts_every_answer_is_a_config_error(tmp_path, tiny_student, chat_dataset):
    with pytest.raises(ConfigError, match="train.max_length=64"):
        build_trainer(TrainConfig(max_length=64), str(tiny_student), chat_dataset["train"], None, tmp_path)


def test_max_examples_trains_on_the_first_examples_of_the_file(
    trainer, tmp_path, tiny_student, chat_dataset, small_train_config
):
    first, _ = build_trainer(
        small_train_config, str(tiny_student), chat_dataset["train"], None, tmp_path / "b", max_examples=10
    )
    assert first.train_dataset["input_ids"] == trainer.train_dataset["input_ids"][:10]
    # one step whose batch is the whole subset: the tokens trained are exactly its tokens
    cfg = small_train_config.model_copy(update={"max_steps": 1})
    result = train_lora(cfg, str(tiny_student), chat_dataset["train"], None, tmp_path / "t", max_examples=cfg.batch_size)
    assert result.examples == cfg.batch_size
    assert result.tokens == sum(len(ids) for ids in trainer.train_dataset["input_ids"][: cfg.batch_size])
    assert result.eval_loss is None and result.eval_losses == []
    with pytest.raises(ConfigError, match="max_examples must be at least 1"):
        build_trainer(small_train_config, str(tiny_student), chat_dataset["train"], None, tmp_path / "z", max_examples=0)


# Runs train_lora in a process of its own, so the test can SIGKILL it mid-run; one torch thread,
# as in this module (one_torch_thread).
TRAIN_IN_CHILD = """
import json, sys
from pathlib import Path
import torch
from tasks.config import TrainConfig
from tasks.train import train_lora
torch.set_num_threads(1)
cfg, base_model, train_jsonl, eval_jsonl, out_dir = json.loads(sys.argv[1])
train_lora(TrainConfig(**cfg), base_model, Path(train_jsonl), Path(eval_jsonl), Path(out_dir))
"""


def completed_checkpoint_steps(out_dir) -> list[int]:
    if not out_dir.is_dir():
        return []
    return [int(state.parent.name.split("-")[1]) for state in out_dir.glob("checkpoint-*/trainer_state.json")]


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(
    tmp_path, tiny_student, chat_dataset, small_train_config, caplog
):
    from peft.utils import load_peft_weights

    cfg = small_train_config.model_copy(update={"max_steps": 8, "save_steps": 1, "eval_steps": 3})
    killed_dir = tmp_path / "killed"
    args = [cfg.model_dump(), str(tiny_student), str(chat_dataset["train"]), str(chat_dataset["eval"]), str(killed_dir)]
    with open(tmp_path / "child.log", "w") as child_log:
        child = subprocess.Popen(
            [sys.executable, "-c", TRAIN_IN_CHILD, json.dumps(args)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=child_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while max(completed_checkpoint_steps(killed_dir), default=0) < 2:
            assert child.poll() is None, "the run ended before it could be killed: " + (tmp_path / "child.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    assert not (killed_dir / "adapter").exists() and max(completed_checkpoint_steps(killed_dir)) < cfg.max_steps

    with caplog.at_level(logging.INFO, logger="tasks.train"):
        resumed = train_lora(cfg, str(tiny_student), chat_dataset["train"], chat_dataset["eval"], killed_dir)
    resumed_from = re.search(r"resuming from (\S+)", caplog.text)
    assert resumed_from, "the second call did not resume"
    assert resumed_from.group(1).startswith(str(killed_dir / "checkpoint-"))
    assert 2 <= int(resumed_from.group(1).rsplit("-", 1)[1]) < cfg.max_steps
    uninterrupted = train_lora(cfg, str(tiny_student), chat_dataset["train"], chat_dataset["eval"], tmp_path / "whole")

    assert resumed.steps == uninterrupted.steps == cfg.max_steps
    assert 0 < resumed.train_seconds and 0 < uninterrupted.train_seconds
    assert resumed.tokens == uninterrupted.tokens > 0
    # eval every 3 steps and at the last; those logged before the kill come back with the checkpoint
    assert [step for step, _ in resumed.eval_losses] == [step for step, _ in uninterrupted.eval_losses] == [3, 6, 8]
    assert [loss for _, loss in resumed.eval_losses] == pytest.approx([loss for _, loss in uninterrupted.eval_losses])
    assert resumed.eval_loss == uninterrupted.eval_losses[-1][1] == uninterrupted.eval_loss
    # Same seed, same batches, optimizer and RNG state restored: on CPU the resumed run
    # computes the same floats in the same order as the uninterrupted one.
    tuned, reference = load_peft_weights(str(resumed.adapter_dir)), load_peft_weights(str(uninterrupted.adapter_dir))
    assert tuned.keys() == reference.keys()
    assert all(torch.equal(tuned[name], reference[name]) for name in reference)


def test_a_checkpoint_cut_short_by_a_kill_is_removed_and_the_one_before_resumed(
    tmp_path, tiny_student, chat_dataset, small_train_config, caplog
):
    cfg = small_train_config.model_copy(update={"max_steps": 2, "save_steps": 1})
    train_lora(cfg, str(tiny_student), chat_dataset["train"], None, tmp_path)
    # Trainer writes trainer_state.json last: a kill while saving step 2 leaves it cut or missing.
    state = tmp_path / "checkpoint-2" / "trainer_state.json"
    state.write_text(state.read_text()[:100])
    with caplog.at_level(logging.INFO, logger="tasks.train"):
        result = train_lora(cfg, str(tiny_student), chat_dataset["train"], None, tmp_path)
    assert f"{tmp_path / 'checkpoint-2'} was not written to the end" in caplog.text
    assert f"resuming from {tmp_path / 'checkpoint-1'}" in caplog.text
    assert result.steps == 2
    assert json.loads(state.read_text())["global_step"] == 2


def test_merge_exports_a_16_bit_model_that_computes_what_base_plus_adapter_computes(
    trained, small_train_config, tmp_path, tiny_student, chat_dataset
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    first, first_dir = trained
    out_dir = tmp_path / "train"
    shutil.copytree(first_dir, out_dir)
    result = train_lora(
        small_train_config.model_copy(update={"merge": True}), str(tiny_student), chat_dataset["train"], None, out_dir
    )
    assert result.steps == first.steps  # restored from the finished checkpoint, then merged
    assert result.merged_dir == out_dir / "merged"
    assert json.loads((result.merged_dir / "config.json").read_text())["dtype"] == "bfloat16"
    assert (result.merged_dir / "model.safetensors").is_file() and (result.merged_dir / "tokenizer.json").is_file()
    assert not (result.merged_dir / "adapter_config.json").exists()

    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)  # plain transformers, no peft
    assert type(merged).__name__ == "Qwen2ForCausalLM" and merged.dtype == torch.bfloat16
    assert not any("lora_" in name for name, _ in merged.named_parameters())

    tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    messages = read_conversations(chat_dataset["eval"])[0]["messages"][:-1]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_student)
        base_logits = base(**prompt).logits
        tuned_logits = PeftModel.from_pretrained(base, first.adapter_dir)(**prompt).logits  # fp32 base + adapter
        merged_logits = merged(**prompt).logits.float()
    # bf16 keeps 8 significant bits: weights and activations rounded to it move each logit by a
    # few units of 2**-8 of the logits' scale, far less than the adapter moved them.
    tolerance = 4 * 2**-8 * tuned_logits.abs().max().item()
    assert (merged_logits - tuned_logits).abs().max().item() < tolerance
    assert (base_logits - tuned_logits).abs().max().item() > 10 * tolerance
