"""Run every skill on the embedded model (SmolLM2-135M-Instruct, llama.cpp) over a couple of seeds and
print a table: skill, seeds, accepted / rejected / failed, samples, LLM calls, wall time, and the most
common rejection reason. A benchmark, not a test: it shows how each flow fares on the default model.

    python bench/skills.py                      # all 17 skills, 2 seeds each (1 text, 1 code), 1 round
    python bench/skills.py --skills mcq,coding --limit 1

One embedded server serves every skill's run (each run is `teachgraph.run(SKILL, base_url=...)` pointed
at it, the way a user points teachgraph at any endpoint), so the table compares the flows, not startups.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import teachgraph  # noqa: E402
from teachgraph import skills  # noqa: E402
from teachgraph import embedded  # noqa: E402

# One short text seed and the first chunk of a code file: both seed kinds, in this order.
SEEDS = [ROOT / "corpus" / "sample" / "zen_of_python.txt", ROOT / "corpus" / "sample" / "colorsys_excerpt.py"]


def run_skill(skill: str, url: str, home: Path, limit: int, rounds: int) -> dict:
    started = time.monotonic()
    try:
        run = teachgraph.run(skill, SEEDS, run_id=f"bench-{skill}", base_url=url, model=embedded.MODEL_NAME,
                             structured="json_object", concurrency=1, limit=limit, rounds=rounds, home=home)
    except teachgraph.TeachgraphError as exc:
        return {"skill": skill, "error": str(exc).splitlines()[0], "wall": time.monotonic() - started}
    wall = time.monotonic() - started
    reasons = run.registry.outcomes(run.id, "rejected") + run.registry.outcomes(run.id, "failed")
    top = max(reasons, key=lambda r: r["seeds"], default=None)
    return {"skill": skill, **run.counts, "wall": wall, "status": run.status,
            "top_reason": f"{top['node']}: {top['reason']}"[:90] if top else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", default="", help="comma-separated skills (default: all)")
    parser.add_argument("--limit", type=int, default=2, help="seeds per skill")
    parser.add_argument("--rounds", type=int, default=1, help="refinement rounds")
    opts = parser.parse_args()
    names = [skills.resolve(s) for s in opts.skills.split(",") if s] or skills.available()
    rows = []
    with tempfile.TemporaryDirectory(prefix="teachgraph-bench-") as tmp:
        home = Path(tmp)
        with embedded.embedded_server(home, log=lambda m: print(m, file=sys.stderr)) as (url, _):
            print(f"embedded server at {url}; {len(names)} skills, {opts.limit} seeds each, "
                  f"{opts.rounds} refinement round(s); load average {os.getloadavg()[0]:.2f}", flush=True)
            for name in names:
                row = run_skill(name, url, home, opts.limit, opts.rounds)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    header = (f"{'skill':<22}{'seeds':>6}{'ok':>4}{'rej':>5}{'fail':>5}{'samples':>8}{'calls':>7}{'wall s':>8}"
              "  top reason")
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['skill']:<22}  error: {r['error']}")
            continue
        print(f"{r['skill']:<22}{r['total']:>6}{r['accepted']:>4}{r['rejected']:>5}{r['failed']:>5}{r['samples']:>8}"
              f"{r['llm_calls']:>7}{r['wall']:>8.1f}  {r['top_reason']}")
    total = [r for r in rows if "error" not in r]
    print(f"\n{sum(r['total'] for r in total)} seeds, {sum(r['accepted'] for r in total)} accepted, "
          f"{sum(r['samples'] for r in total)} samples, {sum(r['llm_calls'] for r in total)} LLM calls, "
          f"{sum(r['wall'] for r in rows):.0f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
