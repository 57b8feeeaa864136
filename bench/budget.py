"""What budgets cost: the spend ledger's check and record per model call (runs.db, one committed
update per reply) and the estimate's time per seed. A benchmark, not a test.

    python bench/budget.py                  # 2,000 calls, 900 rag seeds
    python bench/budget.py --calls 10000 --seeds 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from teachgraph import estimation  # noqa: E402
from teachgraph.checkpoints.registry import Registry  # noqa: E402
from teachgraph.client.budget import Meter, Prices  # noqa: E402
from teachgraph.seeds import Skipped, collect  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "corpus" / "sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=900)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        registry = Registry(Path(folder) / "runs.db")
        meter = Meter(registry.ledger("bench"), Prices(1.0, 1.0), max_cost=1e9)
        started = time.perf_counter()
        for _ in range(args.calls):
            meter.admit()          # what the endpoint asks before each request
            meter.record(500, 50)  # what each reply adds, committed
        per_call = (time.perf_counter() - started) / args.calls
        print(f"ledger: {args.calls} calls, {per_call * 1e3:.3f} ms per call (check + committed record)")
    chunks = [c for c in collect([SAMPLE]) if not isinstance(c, Skipped)]
    seeds = [{"skill": "rag", "kind": c.kind, "transformation": None, "task_type": None, "text": c.text}
             for c in chunks] * (args.seeds // len(chunks) + 1)
    seeds = seeds[:args.seeds]
    estimation.estimate(seeds[:5], rounds=2, max_tokens=384, prices=None, skill_name="rag")   # skill loaded
    started = time.perf_counter()
    made = estimation.estimate(seeds, rounds=2, max_tokens=384, prices=None, skill_name="rag")
    elapsed = time.perf_counter() - started
    print(f"estimate: {len(seeds)} rag seeds in {elapsed:.2f} s ({elapsed / len(seeds) * 1e3:.2f} ms per seed); "
          f"{made.calls} calls, {made.tokens} tokens ({made.tokenizer})")


if __name__ == "__main__":
    main()
