"""Issue 6's check of the grounding gate: a fault-injecting teacher (the real openai SDK, distilabel
and the runner, against the loopback server) corrupts one number, name or time in 20 % of otherwise
good answers over every category of a 30-vessel day; the gate must reject at least 99 % of the
corrupted examples for grounding and at most 1 % of the correct ones. The offline template
teacher's planted errors (teacher.corrupt_share) are held to the same bars."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import GenerateConfig, TeacherConfig, ValidateConfig
from tasks.llm.loopback import LoopbackLLM
from tasks.ports import load_ports
from tasks.seeds import build_seeds, read_seeds
from tasks.teacher import TemplateTeacher, generate_examples
from tasks.validate import GROUNDING_REASONS, unit_tolerance, validate_examples
from tests.tasks.faults import FaultInjector, draft_key

SHARE = 0.2
GENERATION_SEEDS = (11, 12)  # two phrasings of every seed: twice the corrupted examples for the 99 % bar
CATEGORIES = {"identity", "movement", "port_activity", "traffic", "anomalies", "safety"}


@pytest.fixture(scope="module")
def seeds_path(sim30, tmp_path_factory) -> Path:
    staged, facts, _ = sim30
    path = tmp_path_factory.mktemp("fault_seeds") / "seeds.jsonl"
    build_seeds(staged.positions_path, facts.paths, facts.params, facts.digests, None, GenerateConfig(), path)
    return path


@pytest.fixture(scope="module")
def injector(sim30) -> FaultInjector:
    _, facts, _ = sim30
    particulars = pd.read_parquet(facts.paths["vessel_particulars"], columns=["mmsi", "vessel_name"])
    vessels = {int(m): (n if isinstance(n, str) else None) for m, n in zip(particulars["mmsi"], particulars["vessel_name"])}
    ports = [(str(p), str(c)) for p, c in zip(load_ports(None)["port_name"], load_ports(None)["locode"])]
    return FaultInjector(SHARE, vessels, ports, seed=0)


def _verdicts(generated: Path, out: Path) -> tuple[list[dict], dict[str, str], dict]:
    """Every example, its quarantine reason by id (absent: kept), and the gate's stats."""
    stats = validate_examples(generated, ValidateConfig(), out / "validated.jsonl", out / "quarantine_validate.parquet")
    quarantine = pd.read_parquet(out / "quarantine_validate.parquet")
    assert set(quarantine["stage"]) <= {"validate"}
    examples = [json.loads(line) for line in open(generated)]
    return examples, dict(zip(quarantine["record_id"], quarantine["reason"])), stats


@pytest.fixture(scope="module")
def faulty_runs(seeds_path, injector, tmp_path_factory, monkeypatch_module):
    """The fault-injecting teacher over every seed, once per generation seed: per run the examples
    with whether each was corrupted, the gate's reason for each rejected one, and its stats."""
    monkeypatch_module.setenv("TW_TEST_FAULTS_KEY", "sk-test-faults")
    seeds = read_seeds(seeds_path)
    runs = []
    with LoopbackLLM(responder=injector) as srv:
        cfg = TeacherConfig.model_validate({
            "teachers": [{"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
                          "api_key_env": "TW_TEST_FAULTS_KEY", "concurrency": 16}],
            "backoff_base_s": 0.01, "timeout_s": 20,
        })
        for generation_seed in GENERATION_SEEDS:
            out = tmp_path_factory.mktemp(f"faults_{generation_seed}")
            generate_examples(seeds_path, cfg, generation_seed, out / "generated.jsonl", out / "cache.sqlite",
                              out / "ledger.jsonl", out / "quarantine_generate.parquet")
            examples, reasons, stats = _verdicts(out / "generated.jsonl", out)
            assert len(examples) == len(seeds)  # the teacher answered every seed
            # the draft each prompt carried is the clean template answer: its key says what was corrupted
            drafter = TemplateTeacher(TeacherConfig(corrupt_share=0.0), generation_seed)
            corrupted = {s.seed_id: injector.records.get(draft_key(drafter.generate(s).turns)) for s in seeds}
            runs.append({"rows": [(ex, corrupted[ex["seed_id"]], reasons.get(ex["id"])) for ex in examples],
                         "stats": stats})
    return runs


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_corrupted_answers_are_rejected_for_grounding_and_correct_ones_kept(faulty_runs, injector):
    rows = [row for run in faulty_runs for row in run["rows"]]
    bad = [(ex, c, r) for ex, c, r in rows if c is not None]
    good = [(ex, c, r) for ex, c, r in rows if c is None]
    caught = [r for _, _, r in bad if r in GROUNDING_REASONS]
    false_rejects = [(ex["form"], r) for ex, _, r in good if r in GROUNDING_REASONS]
    other_drops = Counter(r for _, _, r in good if r is not None and r not in GROUNDING_REASONS)
    kinds = Counter(c.kind for _, c, _ in bad)
    print(f"\nfault injection: {len(rows)} examples, {len(bad)} corrupted ({dict(kinds)}; "
          f"{dict(Counter(c.how for _, c, _ in bad))}), rejected for grounding {len(caught)} "
          f"({len(caught) / len(bad):.2%}) by {dict(Counter(caught))}; correct {len(good)}, rejected for grounding "
          f"{len(false_rejects)} ({len(false_rejects) / len(good):.2%}); dropped later by {dict(other_drops)}")
    # every category and every kind of corruption is tried, in numbers that make a 99 % bar mean something
    assert {ex["category"] for ex, _, _ in bad} == CATEGORIES
    assert len(bad) >= 150 and min(kinds[k] for k in ("number", "name", "time")) >= 30, kinds
    assert len(bad) / len(rows) == pytest.approx(SHARE, abs=0.03)
    missed = [(ex["form"], c, ex["messages"][-1]["content"]) for ex, c, r in bad if r not in GROUNDING_REASONS]
    assert len(caught) / len(bad) >= 0.99, missed
    assert len(false_rejects) / len(good) <= 0.01, false_rejects


def test_the_funnel_counts_each_validator_in_order(faulty_runs):
    for run in faulty_runs:
        stats, rows = run["stats"], run["rows"]
        steps = stats["validators"]
        assert [s["name"] for s in steps] == ["schema", "grounding", "plausibility", "triviality"]
        left = stats["input"]
        for s in steps:  # each validator sees what the one before kept
            assert s["input"] == left and s["dropped"] == sum(s["reasons"].values())
            left -= s["dropped"]
        assert left == stats["kept"] and stats["rejected"] == stats["input"] - stats["kept"]
        assert steps[1]["dropped"] == sum(r in GROUNDING_REASONS for _, _, r in rows)


def test_the_injector_makes_real_errors(faulty_runs, injector):
    """Each recorded corruption changed the answer beyond what the gate tolerates: a wrong time is
    at least 10 minutes off, a wrong date a day, a wrong name another text, a wrong number another value."""
    assert injector.records and not injector.skipped
    for c in injector.records.values():
        assert c.corrupted != c.original
        if c.how == "shifted":
            minutes = [int(t[:2]) * 60 + int(t[3:5]) for t in (c.original, c.corrupted)]
            assert min(abs(minutes[0] - minutes[1]), 1440 - abs(minutes[0] - minutes[1])) >= 10
        elif c.kind == "name":
            assert c.corrupted.lower() != c.original.lower()
        elif c.kind == "number":  # beyond the loosest tolerance of any unit the number could be read in
            tolerance = max(unit_tolerance(unit, ValidateConfig()) for unit in c.units)
            assert abs(float(c.corrupted) - float(c.original)) > tolerance


def test_the_template_teachers_planted_errors_meet_the_same_bars(seeds_path, tmp_path):
    rows = []
    for generation_seed in GENERATION_SEEDS:
        out = tmp_path / str(generation_seed)
        out.mkdir()
        stats = generate_examples(seeds_path, TeacherConfig(corrupt_share=SHARE), generation_seed, out / "generated.jsonl")
        examples, reasons, validated = _verdicts(out / "generated.jsonl", out)
        assert validated["planted_errors"] == stats["planted_errors"] > 0
        rows += [(ex, reasons.get(ex["id"])) for ex in examples]
    planted = [r for ex, r in rows if ex["planted_error"]]
    clean = [r for ex, r in rows if not ex["planted_error"]]
    caught = sum(r in GROUNDING_REASONS for r in planted)
    false_rejects = sum(r in GROUNDING_REASONS for r in clean)
    print(f"\ntemplate teacher: {len(planted)} planted errors, caught {caught}; {len(clean)} clean, "
          f"rejected for grounding {false_rejects}")
    assert len(planted) >= 150
    assert caught / len(planted) >= 0.99
    assert false_rejects / len(clean) <= 0.01
