"""Seed collection of one enormous single-line document: seconds to the first chunks (what a run
with --limit waits for) and to all of them, and CPU time. A benchmark, not a test.

    python bench/chunking.py                # a 40 MB single-line file (the size a probe found 6 min 25 s for)
    python bench/chunking.py --mb 8 16 40
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from teachgraph.seeds import collect  # noqa: E402

WORDS = "Lorem ipsum dolor sit amet consectetur adipiscing elit "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[40], help="file sizes in MB")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        for mb in args.mb:
            path = Path(folder) / f"one_line_{mb}mb.txt"
            path.write_text(WORDS * (mb * 1024 * 1024 // len(WORDS)))
            wall = time.perf_counter()
            first = list(itertools.islice(collect([path]), 2))
            first_wall = time.perf_counter() - wall
            wall, cpu = time.perf_counter(), time.process_time()
            chunks = sum(1 for _ in collect([path]))
            print(f"{mb} MB single line: first {len(first)} chunks {first_wall:.2f} s; all {chunks} chunks "
                  f"{time.perf_counter() - wall:.2f} s ({time.process_time() - cpu:.2f} s CPU)")
            path.unlink()


if __name__ == "__main__":
    main()
