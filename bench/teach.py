"""Generate data with the embedded model, then teach the embedded model on it and print what it learned.
A benchmark, not a test: the figures (held-out loss and check pass rates before and after, per task type, wall
times) say how much a 135M student gains from its own synthetic data on a 2-core CPU.

    python bench/teach.py                          # rag, mcq and text_classification over the sample corpus,
                                                   # then teach --steps 300 (about an hour on 2 quiet cores)
    python bench/teach.py --skills rag --limit 6 --steps 50
    python bench/teach.py --home DIR --runs ID,ID  # teach on runs already made under DIR
    python bench/teach.py --skills mcq --repair    # one skill, then a --repair round against its random control

Each run is `python cli.py graph run SKILL` against the embedded model (the CLI starts and stops its server),
then one `python cli.py teach` on all of them, so the bench measures what a user gets. The machine's load is
printed with the figures: on a shared machine the wall times are not the machine's best.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEACHGRAPH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], text=True, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", default="rag,mcq,text_classification",
                        help="skills to generate with (these three have checks the student's answers can pass)")
    parser.add_argument("--limit", type=int, default=18, help="seeds per skill")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--no-lora", action="store_true")
    parser.add_argument("--home", type=Path, help="TEACHGRAPH_HOME to use (default: a new temporary folder)")
    parser.add_argument("--runs", default="", help="comma-separated run ids already under --home: skip generation")
    parser.add_argument("--repair", action="store_true",
                        help="teach --repair: one round aimed at the weakest task types, against a random control "
                             "(runs of one skill)")
    parser.add_argument("--repair-types", type=int, default=3)
    parser.add_argument("--repair-target", type=int, default=4)
    opts = parser.parse_args()

    home = opts.home or Path(tempfile.mkdtemp(prefix="teachgraph-bench-teach-"))
    print(f"home {home}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    run_ids = [r for r in opts.runs.split(",") if r]
    if not run_ids:
        for skill in opts.skills.split(","):
            run_id = f"bench-teach-{skill}"
            started = time.monotonic()
            proc = cli("graph", "run", skill, "--run-id", run_id, "--limit", str(opts.limit), "--rounds", "1",
                       "--concurrency", "2", home=home)
            print(f"generate {skill}: exit {proc.returncode}, {time.monotonic() - started:.0f} s", flush=True)
            run_ids.append(run_id)

    out = home / "taught"
    started = time.monotonic()
    proc = cli("teach", *run_ids, "--out", str(out), "--steps", str(opts.steps), "--max-length", str(opts.max_length),
               *(["--no-lora"] if opts.no_lora else []),
               *(["--repair", "--repair-types", str(opts.repair_types), "--repair-target", str(opts.repair_target)]
                 if opts.repair else []), home=home)
    wall = time.monotonic() - started
    print(proc.stdout)
    if proc.returncode != 0:
        sys.exit(f"teach failed with exit {proc.returncode}")
    # with --repair, round 0 is the plain teach on the generated runs
    report = json.loads((out / ("round-0" if opts.repair else "") / "report.json").read_text())
    print(f"teach wall time {wall:.0f} s (load {report['seconds'].get('load')} s, evaluate before "
          f"{report['seconds'].get('evaluate_before')} s, train {report['seconds'].get('train')} s, evaluate after "
          f"{report['seconds'].get('evaluate_after')} s); {report['train_samples']} train / "
          f"{report['heldout_samples']} held-out samples, {report['dropped_too_long']} too long")
    print(f"overall before {report['before']}  after {report['after']}")
    print(f"training loss first {report['train_loss']['first']} last {report['train_loss']['last']}")
    if opts.repair:
        for done in json.loads((out / "repair.json").read_text())["rounds"]:
            print(f"repair round {done['round']}: aimed {done['aimed']}, control {done['control_types']}, new samples "
                  f"{done['new_samples']}; mean held-out loss drop on the aimed types {done['mean_loss_drop_on_aimed']}"
                  f" -> repair helped more: {done['repair_helped_more']}")
            for row in done["aimed_types"]:
                print(f"  {row['task_type']}: before {row['before']}  after repair {row['after_repair']}  "
                      f"after control {row['after_control']}")
            print(f"  overall after: {done['overall_after']}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
