"""The default run's wall time on the embedded model, before and after the speed work (issue 11).
A benchmark, not a test.

    python bench/embedded_default.py              # the default run (18 seeds), before then after
    python bench/embedded_default.py --limit 3    # a quick look
    python bench/embedded_default.py --repeat 2   # before, after, before, after (a shared machine is noisy)

Each arm is `python cli.py graph run rag --no-cache` in a fresh TEACHGRAPH_HOME (the response cache
must not replay). "before" is the default run as it was before issue 11's speed work: the code of
--before-ref (default e8cd989, the last commit with the old rag prompt layout), extracted with
`git archive`, run with TEACHGRAPH_EMBEDDED_TUNING=off (the server without teachgraph/embedded.py's
tuning()); `--before-ref .` runs this checkout with the tuning off instead (the tuning alone).
"after" is this checkout as it is. Per arm it prints wall time, the embedded
server's CPU seconds (less sensitive than wall time to what else the machine runs), calls, prompt
tokens sent and evaluated (what the server's prompt cache and prefix match left to evaluate), tokens
generated, per sample and per call, the server's prompt-eval and generation time (llama.cpp's timings
in embedded-server.log), and accepted seeds and samples; then the after/before ratios, overall and per
before/after pair (their spread says how noisy the machine was). Token counts do not depend on how
busy the machine is; times do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWITCH = "TEACHGRAPH_EMBEDDED_TUNING"
# main before the rag prompts shared their prefix; with the tuning off, the default run before issue 11
BEFORE_REF = "e8cd989"
PROMPT = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
GENERATED = re.compile(r"^llama_perf_context_print:\s+eval time =\s*([\d.]+) ms /\s*(\d+) runs", re.M)


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    return "load " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_server(home: Path, done: threading.Event, out: dict) -> None:
    """The servers' CPU time (a run may start several), read from /proc until the run ends (they die
    with it): the last figure seen per process, summed."""
    seen: dict[int, float] = {}   # by pid: a restarted server's first process still counts its CPU
    while not done.is_set():
        records = list(home.glob("server-*.json"))
        for record in records:
            try:
                pid = json.loads(record.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if (seconds := cpu_seconds(pid)) is not None:
                seen[pid] = seconds
        if seen:
            out["server_cpu"] = sum(seen.values())
            out["servers"] = max(out.get("servers", 0), len(records))   # servers up at once
        done.wait(0.5)


def server_log(home: Path) -> dict:
    text = "".join(log.read_text(errors="replace") for log in sorted(home.glob("embedded-server*.log")))
    prompt = [(float(ms), int(n)) for ms, n in PROMPT.findall(text)]
    generated = [(float(ms), int(n)) for ms, n in GENERATED.findall(text)]
    # "cache hit": the server restored a saved KV state from its prompt cache (llama-cpp-python, verbose)
    return {"evaluated": sum(n for _, n in prompt), "prompt_s": sum(ms for ms, _ in prompt) / 1000,
            "cache_hits": text.count("Llama._create_completion: cache hit"),
            "generated": sum(n for _, n in generated), "generate_s": sum(ms for ms, _ in generated) / 1000}


def before_source(ref: str, work: Path) -> Path:
    """The checkout the before arm runs: `ref`'s files (git archive), or this one for "."."""
    if ref == ".":
        return ROOT
    target = work / f"src-{ref}"
    if not target.exists():
        target.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_arm(arm: str, limit: int | None, work: Path, source: Path) -> dict:
    home = work / arm
    home.mkdir(parents=True)
    env = {**os.environ, "TEACHGRAPH_HOME": str(home)}
    env.pop("OPENAI_BASE_URL", None)
    if arm.startswith("before"):
        env[SWITCH] = "off"
    else:
        env.pop(SWITCH, None)
    # `python cli.py` from `source`: its folder comes first on sys.path, so its teachgraph runs
    cmd = [sys.executable, str(source / "cli.py"), "graph", "run", "rag", "--no-cache", "--run-id", arm]
    if limit:
        cmd += ["--limit", str(limit)]
    done, figures = threading.Event(), {}
    watcher = threading.Thread(target=watch_server, args=(home, done, figures), daemon=True)
    watcher.start()
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=source, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.monotonic() - started
    done.set()
    watcher.join()
    if result.returncode not in (0, 1):
        raise SystemExit(f"{arm}: graph run exited {result.returncode}: {result.stderr[-2000:]}")
    shown = subprocess.run([sys.executable, str(source / "cli.py"), "runs", "show", arm, "--json"], cwd=source,
                           env=env, capture_output=True, text=True, check=True)
    counts = json.loads(shown.stdout)["counts"]
    log = server_log(home)
    return {"arm": arm, "wall": wall, "server_cpu": figures.get("server_cpu", float("nan")),
            "servers": figures.get("servers", 1), **log,
            "calls": counts["llm_calls"], "sent": counts["tokens"] - log["generated"],
            "accepted": counts["accepted"], "rejected": counts["rejected"], "failed": counts["failed"],
            # samples the graph made: the ones kept and, since the quality gates, the ones they dropped
            # (the before arm predates them): the speed work is compared on what the model produced
            "samples": counts["samples"] + counts.get("dropped_samples", 0),
            "dropped": counts.get("dropped_samples", 0), "seeds": counts["total"], "load": os.getloadavg()[0]}


def show(r: dict) -> None:
    per = max(1, r["samples"])
    servers = f"{r['servers']} servers" if r["servers"] > 1 else "server"
    say(f"{r['arm']:>9}: {r['wall']:7.1f} s wall, {servers} {r['server_cpu']:6.1f} s CPU "
        f"(prompt eval {r['prompt_s']:6.1f} s, generation {r['generate_s']:6.1f} s) | "
        f"{r['calls']} calls | per sample: {r['sent'] / per:6.0f} prompt tokens sent, "
        f"{r['evaluated'] / per:6.0f} evaluated, {r['generated'] / per:5.0f} generated | "
        f"per call: {r['sent'] / max(1, r['calls']):5.0f} sent, {r['evaluated'] / max(1, r['calls']):5.0f} "
        f"evaluated ({r['cache_hits']} prompt-cache restores) | "
        f"{r['accepted']}/{r['seeds']} seeds accepted ({r['rejected']} rejected, {r['failed']} failed), "
        f"{r['samples']} samples made ({r['dropped']} of them dropped by the gates) | {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="seeds per run (default: the whole sample corpus, 18)")
    parser.add_argument("--repeat", type=int, default=1, help="before/after pairs, alternated")
    parser.add_argument("--after-first", action="store_true", help="run each pair after, then before")
    parser.add_argument("--before-ref", default=BEFORE_REF,
                        help=f"the commit the before arm runs, tuning off (default {BEFORE_REF}); "
                             "'.': this checkout, tuning off")
    parser.add_argument("--only", choices=("before", "after"), help="run one arm (its figures, no ratios)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="teachgraph-bench-default-"))
    say(f"# the default run (graph run rag{f' --limit {args.limit}' if args.limit else ''}): before = "
        f"{args.before_ref} with {SWITCH}=off, after = this checkout; {os.cpu_count()} cores, {load()}; "
        f"work dir {work}")
    before_src = before_source(args.before_ref, work)
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(args.repeat):
        for arm in (("after", "before") if args.after_first else ("before", "after")):
            if args.only and arm != args.only:
                continue
            result = run_arm(f"{arm}{i + 1}", args.limit, work, before_src if arm == "before" else ROOT)
            results[arm].append(result)
            show(result)
    say()
    if args.only:
        return
    per_sample = {arm: sum(r["evaluated"] for r in rs) / max(1, sum(r["samples"] for r in rs))
                  for arm, rs in results.items()}
    say(f"prompt tokens evaluated per sample: before {per_sample['before']:.0f}, after {per_sample['after']:.0f}")
    for key, label in (("wall", "wall time"), ("server_cpu", "server CPU"), ("prompt_s", "prompt eval time"),
                       ("evaluated", "prompt tokens evaluated"), ("generated", "tokens generated")):
        before = sum(r[key] for r in results["before"])
        after = sum(r[key] for r in results["after"])
        pairs = ", ".join(f"{a[key] / b[key]:.2f}" for b, a in zip(results["before"], results["after"]) if b[key])
        say(f"after/before {label}: {after / before:.2f} (pairs: {pairs})" if before
            else f"after/before {label}: n/a")
    for key in ("accepted", "samples"):
        say(f"{key}: before {[r[key] for r in results['before']]}, after {[r[key] for r in results['after']]}")
    say("load (1 min) at the end of each arm: " + ", ".join(f"{r['arm']} {r['load']:.1f}"
                                                             for pair in zip(results["before"], results["after"])
                                                             for r in pair))


if __name__ == "__main__":
    main()
