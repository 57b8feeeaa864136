"""Benchmark (not a test): `export` of 10k and 100k samples, time and peak RSS of each export, to show
that memory does not grow with the run (samples stream from the registry and go out in batches).

    python bench/export.py                 # 10k and 100k samples, hf format; about 2 minutes
    python bench/export.py --sizes 10000 --formats hf,orca,sharegpt,jsonl

The registry is synthetic (written straight into runs.db, no model): six skills, ~2 KB samples, tool-use
samples with tool calls and results, conversations of three user turns. Each export runs in its own
process, so its peak RSS is its own."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SKILLS = ["reading_comprehension", "open_domain_qa", "mcq", "coding", "conversation", "tool_use"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "description": "city name"}},
                                               "required": ["city"]}}}]


def synthetic_sample(run_id: str, n: int) -> dict:
    skill = SKILLS[n % len(SKILLS)]
    words = f"sample {n} of skill {skill} " + "lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": words},
                {"role": "assistant", "content": words[::-1]}]
    sample = {"id": f"{run_id}:{n:016x}:r{n % 2}", "skill": skill}
    if skill == "conversation":
        messages += [{"role": "user", "content": "and then? " + words[:200]}, {"role": "assistant", "content": words},
                     {"role": "user", "content": "why? " + words[:100]}, {"role": "assistant", "content": words}]
    if skill == "tool_use":
        call = {"id": f"call_{n}", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": f"Paris {n}"})}}
        messages = [{"role": "system", "content": "You have tools.\n" + json.dumps(TOOLS)},
                    {"role": "user", "content": words},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": call["id"], "name": "get_weather", "content": '{"temp_c": 18}'},
                    {"role": "assistant", "content": words}]
        sample["tools"] = TOOLS
    sample["messages"] = messages
    sample["metadata"] = {"seed_id": f"{n:016x}", "seed_source": f"/corpus/doc{n // 7}.md",
                          "transformation": {"agent": "identity", "note": None}, "task_type": f"type_{n % 11}",
                          "task": {"question": words[:120]}, "refinement_round": n % 2,
                          "parent_sample_id": f"{run_id}:{n:016x}:r0" if n % 2 else None,
                          "refinements": [], "checks": [{"check": "x", "ok": True}] if skill == "coding" else [],
                          "model": "bench"}
    return sample


def make_registry(home: Path, sizes: list[int]) -> None:
    from teachgraph.checkpoints.registry import Registry
    registry = Registry(home / "runs.db")
    for size in sizes:
        run_id = f"bench{size}"
        registry.create_run(run_id, "all", {"skill": "all", "seeds": ["/corpus"], "out": "-", "model": "bench",
                                            "rounds": 1, "mix": {s: 1.0 for s in SKILLS}})
        with registry.db.conn:
            registry.db.conn.executemany(
                "insert into seeds (run_id, id, ordinal, source, skill, task_type, status, samples) "
                "values (?, ?, ?, ?, ?, ?, 'accepted', 1)",
                ((run_id, f"{n:016x}", n, f"/corpus/doc{n // 7}.md", SKILLS[n % len(SKILLS)], f"type_{n % 11}")
                 for n in range(size)))
            registry.db.conn.executemany(
                "insert into samples (id, run_id, seed_id, seq, body) values (?, ?, ?, ?, ?)",
                ((s["id"], run_id, s["metadata"]["seed_id"], n, json.dumps(s))
                 for n, s in ((n, synthetic_sample(run_id, n)) for n in range(size))))


def child(home: str, run_id: str, out: str, fmt: str) -> None:
    from teachgraph.checkpoints.registry import Registry
    from teachgraph import export
    started = time.monotonic()
    result = export.export(Registry(Path(home) / "runs.db"), [run_id], Path(out), format=fmt)
    seconds = time.monotonic() - started
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": result.rows, "seconds": seconds, "peak_rss_mb": peak, "out_mb": size / 2**20,
                      "files": len(result.files)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--formats", default="hf")
    parser.add_argument("--child", nargs=4, metavar=("HOME", "RUN", "OUT", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="teachgraph-bench-export-") as tmp:
        home = Path(tmp) / "home"
        started = time.monotonic()
        make_registry(home, sizes)
        print(f"synthetic registry: {sum(sizes)} samples in {time.monotonic() - started:.1f} s "
              f"({(home / 'runs.db').stat().st_size / 2**20:.0f} MB); load {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores")
        print(f"{'format':<9}{'samples':>9}{'seconds':>9}{'rows/s':>9}{'peak RSS MB':>13}{'out MB':>8}{'files':>7}")
        for fmt in args.formats.split(","):
            for size in sizes:
                out = Path(tmp) / f"out-{fmt}-{size}"
                done = subprocess.run([sys.executable, __file__, "--child", str(home), f"bench{size}", str(out), fmt],
                                      capture_output=True, text=True, cwd=ROOT)
                if done.returncode:
                    sys.exit(done.stderr)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{fmt:<9}{r['rows']:>9}{r['seconds']:>9.1f}{r['rows'] / r['seconds']:>9.0f}"
                      f"{r['peak_rss_mb']:>13.0f}{r['out_mb']:>8.1f}{r['files']:>7}")


if __name__ == "__main__":
    main()
