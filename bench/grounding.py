"""Grounding and the judge on the embedded model (SmolLM2-135M-Instruct): how many of reading
comprehension's transformed passages keep their seed's facts, how many replies the lexical grounding
gate flags, and what the LLM judge (the same small model, on the same server) scores them. A benchmark,
not a test: it prints figures about the default model's data.

    python bench/grounding.py                 # 4 seeds of corpus/sample, no refinement
    python bench/grounding.py --limit 8 --skill reading_comprehension
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import teachgraph  # noqa: E402
from teachgraph import embedded  # noqa: E402
from teachgraph.api import filter_samples  # noqa: E402
from teachgraph.gates import ChatSample, make_gate  # noqa: E402
from teachgraph.gates.text import support  # noqa: E402
from teachgraph.skills import load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skill", default="reading_comprehension")
    parser.add_argument("--limit", type=int, default=4)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tg-grounding-"))
    skill = load(args.skill)
    with embedded.embedded_server(home) as (url, _):
        started = time.monotonic()
        run = teachgraph.run(args.skill, [ROOT / "corpus" / "sample"], limit=args.limit, rounds=0, base_url=url,
                             model=embedded.MODEL_NAME, structured="json_object", concurrency=1, home=home,
                             run_id="bench")
        generated = time.monotonic() - started
        samples = list(run.samples())
        counts = run.counts
        print(f"{args.skill}: {counts['total']} seeds, {counts['accepted']} accepted, {counts['rejected']} rejected, "
              f"{counts['failed']} failed, {len(samples)} samples, {counts['llm_calls']} calls, {generated:.0f} s")
        rejected = Counter(o["reason"].split(":")[0] for o in run.registry.outcomes("bench", "rejected"))
        print(f"  rejections: {dict(rejected)}")
        transformations = [s["metadata"]["transformation"] for s in samples]
        measured = [t["seed_support"] for t in transformations if "seed_support" in t]
        fallbacks = sum(t.get("fallback") == "seed_text" for t in transformations)
        print(f"  transformed passages measured: {len(measured)}; fell back to the seed's text: {fallbacks} "
              f"(min_seed_support {skill.spec.transform.min_seed_support}); support: "
              f"{sorted(round(x, 2) for x in measured)}")
        by_agent = Counter((t["agent"], t.get("fallback") or "kept") for t in transformations)
        print(f"  by transformation: {dict(by_agent)}")
        gate = make_gate("grounding", **skill.spec.gates.get("grounding", {}))
        rows = [ChatSample.from_row(s, s["id"]) for s in samples]
        verdicts = [gate.check(r) for r in rows]
        scores = [support(r.response, r.instruction, gate.settings.n) for r in rows]
        print(f"  grounding gate ({gate.settings.action} below {gate.settings.min_support}): "
              f"{sum(not v.keep or v.flagged for v in verdicts)} of {len(rows)} replies; support "
              f"{sorted(round(x, 2) for x in scores)}")
        source = home / "samples.jsonl"
        source.write_text("".join(json.dumps(s) + "\n" for s in samples))
        started = time.monotonic()
        filtered = filter_samples(source, home / "kept.jsonl", home / "rejected.jsonl", judge_model=embedded.MODEL_NAME,
                                  judge_base_url=url, structured="json_object", home=home)
        judged = time.monotonic() - started
        reasons = [json.loads(line)["rejection"] for line in (home / "rejected.jsonl").read_text().splitlines()]
        print(f"  filter --judge-model {embedded.MODEL_NAME}: {filtered.kept} kept, dropped {dict(filtered.dropped)} "
              f"({judged:.0f} s)")
        for rejection in reasons[:5]:
            print(f"    {rejection['gate']}: {rejection['reason'][:150]}")
    print(f"(run home: {home})")


if __name__ == "__main__":
    main()
