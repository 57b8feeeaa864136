"""`filter` on a generated file: time and peak memory (not a test).

    python bench/filter.py [--rows 100000] [--semantic]

The file is tests/planted.py's mix (passages with several questions, QA, edits, conversations) with
about 10% exact and near copies and a few degenerate rows. Peak memory is the process's max RSS
(resource.getrusage), measured in a child process so generating the file is not counted."""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.planted import Planter  # noqa: E402


def generate(path: Path, rows: int) -> None:
    p = Planter(11)
    written, recent = 0, []
    with path.open("w", encoding="utf-8") as fh:
        while written < rows:
            batch = p.clean(50)
            recent = (recent + batch)[-2000:]
            for original in random.Random(written).sample(recent, 5):
                batch.append(p.exact_copy(original) if written % 2 else p.near_copy(original))
            if written % 1000 < 50:
                batch += p.degenerate()
            for row in batch[: rows - written]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += min(len(batch), rows - written)


def child(source: str, semantic: bool) -> None:
    from teachgraph.gates import filter_file
    started = time.perf_counter()
    counts = filter_file(Path(source), Path(source + ".kept"), Path(source + ".rejected"), semantic=semantic)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": counts.rows, "kept": counts.kept, "dropped": dict(counts.dropped),
                      "seconds": round(seconds, 1), "rows_per_s": round(counts.rows / seconds),
                      "peak_rss_mb": round(peak_mb)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--semantic", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.semantic)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.jsonl"
        t = time.perf_counter()
        generate(source, args.rows)
        print(f"generated {args.rows} rows ({source.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
        baseline = subprocess.run([sys.executable, "-c", "import resource, teachgraph.gates; "
                                   "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"],
                                  capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
        out = subprocess.run([sys.executable, __file__, "--child", str(source),
                              *(["--semantic"] if args.semantic else [])],
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout
        result = json.loads(out)
        print(json.dumps(result))
        per_row = (result["peak_rss_mb"] - int(baseline)) * 1024 / result["kept"]
        print(f"peak RSS {result['peak_rss_mb']} MB, {baseline} MB of it imports: "
              f"{per_row:.1f} KB per kept row -> about {per_row * 1e6 / 1024 / 1024:.1f} GB for 1M kept rows")


if __name__ == "__main__":
    main()
