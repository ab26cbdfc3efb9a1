"""Training benchmark: tokens/s and peak memory of tasks.train.train_lora (QLoRA on CUDA, LoRA on CPU).

The issue it answers (issue 7, item 6):

    "GPU: when this task has a lent GPU machine, run QLoRA there on a model with Qwen2.5-7B's
    architecture (weights initialised from the config, since nothing can be downloaded there)
    and on the tiny student, and put tokens/s, peak GPU memory and steps in your note. A script
    bench/train.py prints `tokens_per_s=<n> peak_mem_gb=<m> device=<d>`."

    .venv/bin/python bench/train.py [--arch tiny|qwen2.5-0.5b|qwen2.5-7b] [--steps 30]
                                    [--batch-size 8] [--max-length 2048] [--examples 200] [--threads N]
                                    [--max-context-records 40] [--keep DIR]

Data (not timed). The project's own pipeline: simulate (FLEET vessels x HOURS, seed SIM_SEED) ->
ingest -> stage -> facts -> seeds (generate.max_seeds = --examples, generate.max_context_records =
--max-context-records) -> the offline TemplateTeacher, whose examples (system + AIS context +
question, answers, multi-turn dialogues) are the training file as the split stage writes it. At the
default 40 context records an example is 500-2,200 tokens with the tiny tokenizer (median about
1,100; the first answer starts after 400-2,150); a shorter --max-length drops the examples whose
first answer it cuts (the report says how many were kept).

Model (not timed). `tiny`: the offline default student (tasks.student.build_tiny_student, its
tokenizer trained on the examples). `qwen2.5-*`: a Qwen2Config with that model's published
architecture (config.json of Qwen/Qwen2.5-0.5B-Instruct and Qwen/Qwen2.5-7B-Instruct: hidden size,
layers, heads, KV heads, MLP width, vocabulary, RoPE theta, tied or separate head) initialised with
random weights (nothing can be downloaded) and saved in bfloat16. Its tokenizer is the tiny
student's (1,024 tokens): the embedding keeps the published vocabulary, so parameters, memory
and the cost of the output head are the real model's, and the training data uses only ids below
1,024. Random weights cost the same FLOPs and memory as trained ones; the loss means nothing here.

Training (timed): `train_lora` in a fresh process, exactly as the train stage calls it, at
TrainConfig defaults (LoRA r 16 on every linear layer of the blocks, assistant-only loss) except
--steps / --batch-size / --max-length; one checkpoint at the last step; no eval set. On CUDA
that loads the bf16 files as NF4 with double quantization (bitsandbytes) and trains QLoRA with
activation checkpointing; on CPU plain LoRA in fp32 (train_lora says so).

Measure. seconds = the Trainer's train_runtime (the training loop: steps + the final checkpoint;
no model load, no tokenization); tokens = non-padding input tokens through forward and backward
(TrainResult.tokens); tokens/s = tokens / seconds. Peak memory: torch.cuda.max_memory_allocated on
CUDA (tensors; the caching allocator reserves more); on CPU the training process's peak RSS
(VmHWM, or resource.getrusage where /proc is missing), imports and the fp32 model included.
params: the model's parameters (the 4-bit ones counted as weights, not bytes); trainable: the
saved adapter's. --threads sets torch's CPU threads (default: one per core). On the 2 shared
build cores another busy process slows a 2-thread run severalfold (OpenMP threads wait on each
other at every op), a 1-thread run much less: the title gives the threads and the load average.

The last line is `tokens_per_s=<n> peak_mem_gb=<m> device=<d>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.ingest import peak_rss_mb, run_script_job  # noqa: E402

FLEET, HOURS, SIM_SEED, GENERATION_SEED = 30, 12, 7, 0
EXAMPLES = 200
STEPS = 30
# Published architectures (Hugging Face config.json of the Instruct models). Qwen2 always has
# biases on q/k/v; sliding-window attention is off in both.
QWEN25_ARCHS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
                     "tie_word_embeddings": True},
    "qwen2.5-7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
                   "tie_word_embeddings": False},
}  # fmt: skip
ARCHS = ("tiny", *QWEN25_ARCHS)
NEEDS_CUDA = {"qwen2.5-7b"}
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip


# --- data and model (not timed) ---------------------------------------------------------------


def build_examples(work: Path, max_seeds: int, max_context_records: int) -> Path:
    """Chat examples from the project's pipeline up to the template teacher: the train JSONL."""
    from tasks.config import FactsConfig, GenerateConfig, SimulateConfig, TeacherConfig
    from tasks.facts import compute_facts
    from tasks.ingest import ingest_noaa_csv
    from tasks.ports import load_ports
    from tasks.seeds import build_seeds
    from tasks.simulate import simulate
    from tasks.stage import stage_positions
    from tasks.teacher import generate_examples

    sim = simulate(SimulateConfig(seed=SIM_SEED, vessels=FLEET, hours=HOURS), load_ports(), work / "source")
    ingest_noaa_csv(sim.csv_path, work / "w.duckdb")
    staged = stage_positions(work / "w.duckdb", work / "staged")
    facts = compute_facts(work / "w.duckdb", None, FactsConfig(), work / "facts")
    build_seeds(staged.positions_path, facts.paths, facts.params, facts.digests, None,
                GenerateConfig(seed=GENERATION_SEED, max_seeds=max_seeds, max_context_records=max_context_records),
                work / "seeds.jsonl")  # fmt: skip
    generate_examples(work / "seeds.jsonl", TeacherConfig(corrupt_share=0.0), GENERATION_SEED, work / "train.jsonl")
    return work / "train.jsonl"


def build_model(arch: str, train_jsonl: Path, work: Path) -> Path:
    """The tiny student, or a randomly initialised Qwen2.5 architecture with its tokenizer, saved in bf16."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from tasks.config import StudentConfig
    from tasks.student import build_tiny_student

    corpus = [m["content"] for line in open(train_jsonl) for m in json.loads(line)["messages"]]
    tiny = build_tiny_student(StudentConfig(), corpus, work / "tiny", seed=0)
    if arch == "tiny":
        return tiny
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    spec = dict(QWEN25_ARCHS[arch])
    config = Qwen2Config(
        **{k: v for k, v in spec.items() if k != "rope_theta"},
        rope_parameters={"rope_type": "default", "rope_theta": spec["rope_theta"]},
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    # Initialised where it will be trained: 7.6 B weights draw in seconds on a GPU, minutes on a CPU.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16)
    out = work / arch
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


# --- the timed job (its own process) -------------------------------------------------------


def train_job(model_dir: Path, train_jsonl: Path, out_dir: Path, steps: int, batch_size: int, max_length: int,
              threads: int | None) -> dict:  # fmt: skip
    import torch
    from peft.utils import load_peft_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from tasks.config import TrainConfig
    from tasks.train import train_lora

    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, max_length=max_length, save_steps=steps)
    result = train_lora(cfg, str(model_dir), train_jsonl, None, out_dir)
    peak_gb = torch.cuda.max_memory_allocated() / 1e9 if cuda else peak_rss_mb() * 2**20 / 1e9
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return {
        "device": result.device,
        "device_name": torch.cuda.get_device_name(0) if cuda else f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
        "method": result.method,
        "params": sum(p.numel() for p in skeleton.parameters()),
        "trainable": sum(t.numel() for t in load_peft_weights(str(result.adapter_dir)).values()),
        "steps": result.steps,
        "examples": result.examples,
        "tokens": result.tokens,
        "seconds": result.train_seconds,
        "call_seconds": result.seconds,
        "train_loss": result.train_loss,
        "peak_mem_gb": peak_gb,
    }


# --- report --------------------------------------------------------------------------------


def print_report(arch: str, r: dict, examples_in_file: int, context_records: int, batch_size: int, max_length: int,
                 load: float) -> None:  # fmt: skip
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"train_lora, {arch}, batch {batch_size} x max_length {max_length}, on {r['device_name']} "
                  f"(load average {load:.1f})", box=box.SIMPLE_HEAD)  # fmt: skip
    columns = ("model", "method", "device", "params", "trainable params", "steps", "examples", "tokens trained",
               "seconds", "tokens/s", "peak memory GB")  # fmt: skip
    for name in columns:
        table.add_column(name, justify="left" if name in ("model", "method", "device") else "right")
    table.add_row(arch, r["method"], r["device"], f"{r['params']:,}", f"{r['trainable']:,}", str(r["steps"]),
                  f"{r['examples']:,}", f"{r['tokens']:,}", f"{r['seconds']:.1f}", f"{r['tokens'] / r['seconds']:,.0f}",
                  f"{r['peak_mem_gb']:.2f}")  # fmt: skip
    Console(width=200).print(table)
    memory = "torch.cuda.max_memory_allocated" if r["device"].startswith("cuda") else "peak RSS of the training process"
    print(f"examples: {r['examples']:,} of the {examples_in_file:,} in the file (at most {context_records} AIS records "
          f"of context each) kept at max_length {max_length} "
          f"({r['steps'] * batch_size:,} sequences trained); tokens: non-padding input tokens; seconds: the training "
          f"loop (train_lora took {r['call_seconds']:.1f} s with model load and tokenization); peak memory: {memory}; "
          f"last train loss {r['train_loss']:.3f} (random weights)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="tiny", help="the model trained (qwen2.5-*: published architecture, random weights)")
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, help="sequences per step (default: TrainConfig's)")
    parser.add_argument("--max-length", type=int, help="tokens per sequence (default: TrainConfig's)")
    parser.add_argument("--examples", type=int, default=EXAMPLES, help="seeds asked of the pipeline (about as many examples)")
    parser.add_argument("--max-context-records", type=int, help="AIS records at most in a context (default: GenerateConfig's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads in the training process (default: torch's, one per core)")
    parser.add_argument("--keep", type=Path, help="build data, model and run here and keep them (default: a temp dir, removed)")
    parser.add_argument("--job", choices=("train",), help=argparse.SUPPRESS)
    parser.add_argument("--job-args", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.job:  # child process: the timed training, result as the last stdout line
        kwargs = json.loads(args.job_args)
        paths = {k: Path(kwargs.pop(k)) for k in ("model_dir", "train_jsonl", "out_dir")}
        print(json.dumps(train_job(**paths, **kwargs)))
        return

    import torch

    from tasks.config import GenerateConfig, TrainConfig

    if args.arch in NEEDS_CUDA and not torch.cuda.is_available():
        raise SystemExit(f"bench/train.py: --arch {args.arch} needs a CUDA GPU (QLoRA, about 15 GB to build in bf16) "
                         "and this machine has none; use --arch tiny or qwen2.5-0.5b")  # fmt: skip
    defaults = TrainConfig()
    batch_size, max_length = args.batch_size or defaults.batch_size, args.max_length or defaults.max_length
    if args.steps < 1 or args.examples < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--steps, --examples and --threads must be at least 1")
    if args.max_context_records is not None and args.max_context_records < 2:
        parser.error("--max-context-records must be at least 2 (a fact needs two records)")
    os.environ.update(ENV)
    work = args.keep or Path(tempfile.mkdtemp(prefix="tidewright-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"building examples and the {args.arch} model in {work} (not timed) ...", file=sys.stderr)
        context_records = args.max_context_records or GenerateConfig().max_context_records
        train_jsonl = build_examples(work / "data", args.examples, context_records)
        examples_in_file = sum(1 for _ in open(train_jsonl))
        model_dir = build_model(args.arch, train_jsonl, work / "models")
        # train_lora resumes from checkpoints it finds: a kept folder's earlier run must not be timed as this one
        shutil.rmtree(work / "run", ignore_errors=True)
        load = os.getloadavg()[0]
        print(f"training {args.steps} steps (load average {load:.1f}) ...", file=sys.stderr)
        job_args = {"model_dir": str(model_dir), "train_jsonl": str(train_jsonl), "out_dir": str(work / "run"),
                    "steps": args.steps, "batch_size": batch_size, "max_length": max_length,
                    "threads": args.threads}  # fmt: skip
        result = run_script_job(Path(__file__), "train", ["--job-args", json.dumps(job_args)])
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_report(args.arch, result, examples_in_file, context_records, batch_size, max_length, load)
    print(f"tokens_per_s={result['tokens'] / result['seconds']:.0f} peak_mem_gb={result['peak_mem_gb']:.2f} "
          f"device={result['device']}")


if __name__ == "__main__":
    main()
