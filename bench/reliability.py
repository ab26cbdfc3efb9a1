"""Reliability bench: the crash driver (tests/faults/crash.py) N times, then the fault cases
(tests/faults/: full and read-only disk, damaged caches and day partition, concurrent refreshes,
the line lock, readers during publishing, a review import against a refresh; and training killed
between checkpoints, from tests/tasks/test_train.py), and one table.

    .venv/bin/python bench/reliability.py [--kills 20] [--seed 7] [--no-faults]

Every kill is a SIGKILL of a real refresh process (simulated AIS, an OpenAI-compatible loopback
teacher) at a point chosen from the run's stage markers plus a random delay; each killed run is
started again with the same run id until it completes and is compared with one uninterrupted run.
The last line:
    kills=<n> lost=<n> duplicated=<n> repeated_calls=<n> faults_survived=<n>/<m>
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                    ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(name, value)

FAULT_TESTS = ["tests/faults/test_resource_faults.py", "tests/faults/test_concurrency.py",
               # training killed between checkpoints resumes and ends where an uninterrupted run ends
               "tests/tasks/test_train.py::test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends"]


def crash_runs(kills: int, seed: int, root: Path) -> list[dict]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tasks.llm.loopback import LoopbackLLM
    from tests.faults.crash import compare, crash_config, kill_plan, published, reference_run, run_with_kills

    rng = random.Random(seed)
    rows = []
    with prefect_test_harness(server_startup_timeout=180), LoopbackLLM(latency_s=0.1) as srv:
        api_url = PREFECT_API_URL.value()
        embeddings = root / "embeddings.sqlite"
        started = time.monotonic()
        reference = reference_run(crash_config(root / "ref.yaml", root / "ref-runs", srv, embeddings), root / "ref-runs",
                                  api_url, root)
        print(f"reference run: {time.monotonic() - started:.0f} s", flush=True)
        for n, targets in enumerate(kill_plan(rng, kills)):
            runs = root / f"crash-{n}"
            started = time.monotonic()
            row = {"run": f"crash-{n}", "aimed": [t.name for t in targets]}
            try:
                outcome = run_with_kills(crash_config(root / f"crash-{n}.yaml", runs, srv, embeddings), runs, "nightly",
                                         api_url, targets, root, rng)
                result = compare(outcome.run_dir, reference)
                row.update(killed=[a.target for a in outcome.attempts if a.killed], attempts=len(outcome.attempts),
                           lost=result.lost, duplicated=result.duplicated, different=result.different,
                           torn=len(result.torn), repeated=len(outcome.repeated_items),
                           calls=sum(a.new_calls for a in outcome.attempts), error="")
            except AssertionError as exc:  # a run that never completed: everything it should have published is lost
                row.update(killed=[], attempts=0, lost=len(published(reference)), duplicated=0, different=0, torn=0,
                           repeated=0, calls=0, error=str(exc).splitlines()[0][:120])
            row["seconds"] = round(time.monotonic() - started, 1)
            rows.append(row)
            print(f"{row['run']}: killed at {', '.join(row['killed']) or '-'}; {row['seconds']} s", flush=True)
    return rows


def fault_cases(root: Path) -> list[tuple[str, bool, float]]:
    """The fault tests, each one case: (test name, passed, seconds)."""
    report = root / "faults.xml"
    subprocess.run([sys.executable, "-m", "pytest", *FAULT_TESTS, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
                   cwd=REPO, check=False)
    cases = []
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = any(child.tag in ("failure", "error", "skipped") for child in case)
        cases.append((case.get("name"), not failed, float(case.get("time", 0))))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver across crash runs (default 20)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the kill points and delays")
    parser.add_argument("--no-faults", action="store_true", help="only the crash driver")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tidewright-reliability-") as tmp:
        root = Path(tmp)
        rows = crash_runs(args.kills, args.seed, root)
        cases = [] if args.no_faults else fault_cases(root)

    print("\n| run | aimed at | killed at | attempts | lost | duplicated | changed | torn files | repeated calls | calls | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {', '.join(r['aimed'])} | {', '.join(r['killed']) or '-'} | {r['attempts']} | "
              f"{r['lost']}{' (never completed: ' + r['error'] + ')' if r['error'] else ''} | {r['duplicated']} | {r['different']} | "
              f"{r['torn']} | {r['repeated']} | {r['calls']} | {r['seconds']} |")
    if cases:
        print("\n| fault case | survived | s |\n|---|---|---|")
        for name, passed, seconds in cases:
            print(f"| {name} | {'yes' if passed else 'NO'} | {seconds:.1f} |")
    kills = sum(len(r["killed"]) for r in rows)
    lost = sum(r["lost"] + r["different"] for r in rows)  # a changed example counts as lost
    print(f"\nkills={kills} lost={lost} duplicated={sum(r['duplicated'] for r in rows)} "
          f"repeated_calls={sum(r['repeated'] for r in rows)} faults_survived={sum(p for _, p, _ in cases)}/{len(cases)}")


if __name__ == "__main__":
    main()
