"""Fine-tune the student on the chat dataset with LoRA (QLoRA on CUDA), resumable from checkpoints.

The dataset stays conversational (`messages` only), so TRL renders every example with the
tokenizer's own chat template, exactly as the model will be prompted at deployment, and the loss
covers the assistant turns only (`{% generation %}` spans of the template). The eval loss is
measured every `train.eval_steps` while training; `train.merge` also exports the adapter folded
into a 16-bit copy of the base.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import TrainConfig
from tasks.errors import ConfigError, InputError
from tasks.student import hub_offline, is_local_model

log = logging.getLogger(__name__)

# PEFT's "all-linear": every linear layer of the blocks, i.e. the attention and MLP projections
# (q/k/v/o, gate/up/down in Qwen2 and Llama), whatever a model calls them; the output head stays frozen.
LORA_TARGET_MODULES = "all-linear"
ADAPTER_DIRNAME = "adapter"
MERGED_DIRNAME = "merged"
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    train_loss: float
    eval_loss: float | None
    device: str
    method: str
    seconds: float
    examples: int  # training examples used: the first max_examples of the file, less those cut by max_length
    tokens: int  # non-padding tokens the model was trained on, over all steps (resumed runs included)
    train_seconds: float  # of this call's training loop (no model load, no merge); 0 when nothing was left to train
    eval_losses: list[tuple[int, float]]  # (step, eval loss) measured during training, in step order
    merged_dir: Path | None


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """The `messages` of every example in a dataset JSONL, checked to end with an assistant answer."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; run the split stage first or pass an existing JSONL")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
        messages = example.get("messages") if isinstance(example, dict) else None
        if not messages or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages):
            raise InputError(f"{path}:{lineno} has no `messages` list of {{role, content}} turns")
        if messages[-1]["role"] != "assistant":
            raise InputError(
                f"{path}:{lineno}: the last turn must be the assistant's answer, got {messages[-1]['role']!r}"
            )
        # Only role and content go to the template; provenance keys stay in the JSONL.
        rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in messages]})
    return rows


def _conversation_dataset(path: Path, max_examples: int | None = None):
    from datasets import Dataset

    rows = read_conversations(path)
    if max_examples is not None:
        if len(rows) > max_examples:
            log.info("training on the first %d of the %d examples in %s", max_examples, len(rows), path)
        else:
            log.info("%s holds %d examples, not more than max_examples=%d: training on all", path, len(rows), max_examples)
        rows = rows[:max_examples]
    return Dataset.from_list(rows) if rows else None


def _load_model(base_model: str, cuda: bool):
    import torch
    from transformers import AutoModelForCausalLM

    if not cuda:
        return AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        base_model, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": 0}
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)


def build_trainer(
    cfg: TrainConfig,
    base_model: str,
    train_jsonl: Path,
    eval_jsonl: Path | None,
    out_dir: Path,
    max_examples: int | None = None,
):
    """The SFTTrainer that `train_lora` runs, with its datasets tokenized and labelled.

    Returns (trainer, method). Exposed so tests and notebooks can inspect the exact tensors the
    model is trained on (`trainer.train_dataset["labels"]` is -100 outside assistant turns).
    max_examples keeps the first N examples of train_jsonl (file order) and drops the rest.
    """
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LossToLogger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.info("step %d/%d: loss %.4f", state.global_step, state.max_steps, logs["loss"])
            if logs and "eval_loss" in logs:
                log.info("step %d/%d: eval loss %.4f", state.global_step, state.max_steps, logs["eval_loss"])

    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be at least 1, got {max_examples}; pass None to train on every example")
    cuda = torch.cuda.is_available()
    method = "qlora-nf4" if cuda else "lora"
    if not cuda:
        log.warning("QLoRA needs CUDA (bitsandbytes 4-bit kernels are CUDA-only); training plain LoRA in fp32 on CPU")

    train_dataset = _conversation_dataset(train_jsonl, max_examples)
    if train_dataset is None:
        raise InputError(f"{train_jsonl} holds no examples; the training split is empty")
    eval_dataset = _conversation_dataset(eval_jsonl) if eval_jsonl is not None else None

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.chat_template is None:
        raise ConfigError(
            f"student.base_model {base_model} has no chat template; use an instruct/chat model so that "
            "training matches deployment"
        )

    args = SFTConfig(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_length=cfg.max_length,
        seed=cfg.seed,
        assistant_only_loss=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        # Trainer also evaluates at the last step, whatever eval_steps is: the final eval loss.
        eval_strategy="steps" if eval_dataset is not None else "no",
        eval_steps=cfg.eval_steps or cfg.save_steps,
        include_num_input_tokens_seen="non_padding",
        logging_steps=max(1, min(10, cfg.max_steps // 10)),
        report_to=[],
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=cuda,
        # Recomputing activations only pays off when memory is short (a quantized 7B on a GPU).
        activation_checkpointing=cuda,
        # Batches of similar length: less padding, which on CPU is most of the wasted time.
        train_sampling_strategy="group_by_length",
        push_to_hub=False,
    )
    peft_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=LORA_TARGET_MODULES,
        task_type="CAUSAL_LM",
    )
    with quiet_hf_output():
        trainer = SFTTrainer(
            model=_load_model(base_model, cuda),
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    # PrinterCallback prints every log dict to stdout; progress goes to this module's logger instead.
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LossToLogger())
    dropped = len(train_dataset) - len(trainer.train_dataset)
    if dropped == len(train_dataset):
        raise ConfigError(
            f"no training example has an answer token within train.max_length={cfg.max_length}; "
            "raise train.max_length or shorten the context (generate.max_context_records)"
        )
    if dropped:
        log.warning(
            "%d of %d training examples have no answer token within max_length=%d and were dropped; "
            "raise train.max_length or shorten the context",
            dropped,
            len(train_dataset),
            cfg.max_length,
        )
    return trainer, method


def last_complete_checkpoint(out_dir: Path) -> Path | None:
    """The newest out_dir/checkpoint-<step> that was written to the end; incomplete ones are removed.

    Trainer writes a checkpoint in place, trainer_state.json last, so a run killed while saving
    leaves a folder without one (or with a cut one). Resuming from it would fail, or worse, go on
    silently with a fresh optimizer where optimizer.pt is missing.
    """
    complete: dict[int, Path] = {}
    for folder in Path(out_dir).iterdir():
        match = CHECKPOINT_DIR.match(folder.name)
        if not match or not folder.is_dir():
            continue
        step = int(match.group(1))
        try:
            written = json.loads((folder / "trainer_state.json").read_text())["global_step"] == step
        except (OSError, ValueError, KeyError, TypeError):
            written = False
        if written:
            complete[step] = folder
        else:
            log.warning("%s was not written to the end (the run stopped while saving it); removing it", folder)
            shutil.rmtree(folder)
    return complete[max(complete)] if complete else None


def eval_loss_curve(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, eval loss) of every evaluation in a Trainer log history, one per step, in step order."""
    curve = {int(entry["step"]): float(entry["eval_loss"]) for entry in log_history if "eval_loss" in entry}
    return sorted(curve.items())


def merged_dtype():
    """The 16-bit dtype a merged model is exported in: bfloat16, as Qwen2.5 and Llama ship, unless
    the GPU cannot compute in it (before Ampere: T4, V100), then float16. torch's CPU kernels
    implement bfloat16 for every op a causal LM uses, so CPU-only machines export bfloat16 too."""
    import torch

    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def merge_adapter(base_model: str, adapter_dir: Path, merged_dir: Path) -> Path:
    """Fold the LoRA adapter into a 16-bit copy of the base; save model and tokenizer to merged_dir.

    The base is loaded again from its files in 16 bits, never the 4-bit one QLoRA trained on:
    rounding the merged weights back to NF4 would lose most of the adapter's update, and serving
    stacks load a plain 16-bit checkpoint. (A QLoRA adapter learned against NF4-rounded weights,
    so the merged model differs from the trained one by that rounding of the base.) The merge runs
    on the CPU (PEFT computes each update in fp32 there), so it needs no GPU memory next to what
    training still holds.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=merged_dtype())
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged_dir = Path(merged_dir)
    merged.save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(merged_dir)
    log.info("merged %s into a %s copy of %s: %s", adapter_dir, merged.dtype, base_model, merged_dir)
    return merged_dir


def _restore_if_finished(trainer, checkpoint: Path, max_steps: int) -> bool:
    """Load a checkpoint that already reached max_steps into the trainer instead of training.

    transformers 5.23 runs one extra optimizer step when asked to resume a run that is already
    complete, so a finished run (a retried or repeated flow) is restored here, not resumed.
    """
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    if state.global_step < max_steps:
        return False
    set_peft_model_state_dict(trainer.model, load_peft_weights(str(checkpoint)))
    trainer.state = state
    return True


@contextlib.contextmanager
def quiet_hf_output():
    """No progress bars from datasets/transformers and no v6 deprecation notices while inside."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_bars, transformers_bars = not datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # TRL 1.16 and PEFT still call the transformers 5.x names that 6.0 removes.
            warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6", category=FutureWarning)
            yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            hf_logging.enable_progress_bar()


def train_lora(
    cfg: TrainConfig,
    base_model: str,
    train_jsonl: Path,
    eval_jsonl: Path | None,
    out_dir: Path,
    max_examples: int | None = None,
) -> TrainResult:
    """Fine-tune `base_model` with LoRA on train_jsonl; adapter and tokenizer go to out_dir/adapter.

    Checkpoints go to out_dir/checkpoint-<step> every cfg.save_steps; a call that finds one
    resumes from the latest complete one, so a crashed or killed run continues where it stopped,
    and a call with a larger max_steps continues training. max_examples trains on the first N
    examples of train_jsonl only (give each N its own out_dir). train_loss is the mean loss of
    the last logging window; eval_losses is the eval loss every cfg.eval_steps and at the end.
    With cfg.merge the adapter is also merged into a 16-bit base saved to out_dir/merged.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    offline = hub_offline() if is_local_model(base_model) else contextlib.nullcontext()
    with offline, quiet_hf_output():
        trainer, method = build_trainer(cfg, base_model, train_jsonl, eval_jsonl, out_dir, max_examples)
        checkpoint = last_complete_checkpoint(out_dir)
        finished = checkpoint is not None and _restore_if_finished(trainer, checkpoint, cfg.max_steps)
        if finished:
            log.info("%s already holds %d steps; not training further", checkpoint, trainer.state.global_step)
        else:
            if checkpoint:
                log.info("resuming from %s", checkpoint)
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        eval_losses = eval_loss_curve(trainer.state.log_history)
        if trainer.eval_dataset is not None and (not eval_losses or eval_losses[-1][0] != trainer.state.global_step):
            # A checkpoint written without evaluation during training (an older run's) has no final eval loss.
            trainer.evaluate()
            eval_losses = eval_loss_curve(trainer.state.log_history)
        adapter_dir = out_dir / ADAPTER_DIRNAME
        trainer.model.save_pretrained(adapter_dir)
        trainer.processing_class.save_pretrained(adapter_dir)
        merged_dir = merge_adapter(base_model, adapter_dir, out_dir / MERGED_DIRNAME) if cfg.merge else None

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    train_loss = float(losses[-1]) if losses else math.nan
    runtimes = [entry["train_runtime"] for entry in trainer.state.log_history if "train_runtime" in entry]
    train_seconds = float(runtimes[-1]) if runtimes and not finished else 0.0
    result = TrainResult(
        adapter_dir=adapter_dir,
        steps=trainer.state.global_step,
        train_loss=train_loss,
        eval_loss=eval_losses[-1][1] if trainer.eval_dataset is not None else None,
        device=str(trainer.args.device),
        method=method,
        seconds=round(time.perf_counter() - started, 2),
        examples=len(trainer.train_dataset),
        tokens=int(trainer.state.num_input_tokens_seen),
        train_seconds=train_seconds,
        eval_losses=eval_losses,
        merged_dir=merged_dir,
    )
    log.info(
        "%s: %d steps on %d examples in %.1f s, train loss %.3f, eval loss %s",
        method,
        result.steps,
        result.examples,
        result.seconds,
        result.train_loss,
        "n/a" if result.eval_loss is None else f"{result.eval_loss:.3f}",
    )
    return result


train_task = task(name="train-lora")(train_lora)
