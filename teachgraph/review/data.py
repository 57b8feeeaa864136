"""What the review page shows, read from a run's store: the run at a glance, its items (every sample,
and every seed that made none: rejected, failed or still pending) with filters, an item's lineage step
by step, and reviewers' verdicts. Reads only what is recorded, so it works while the run goes on."""

from __future__ import annotations

import json
from typing import Any

from teachgraph import export, skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.errors import UsageError
from teachgraph.runner import Home, shown_status
from teachgraph.review import diagram

VERDICTS = ("accepted", "rejected")
NOTE_CHARS = 2000
SEED_PREFIX = "seed:"        # an item that is a seed with no sample: seed:<seed id>


class BadVerdict(UsageError):
    """A verdict request the page cannot store (a one-line reason, answered with 400)."""


def run_skills(registry: Registry, run_id: str) -> list[str]:
    return [row["skill"] for row in registry.by_skill(run_id) if row["skill"]] or [registry.run(run_id)["skill"]]


def overview(registry: Registry, home: Home, run_id: str) -> dict[str, Any]:
    """The run at a glance, with each skill's per-node figures (polled by the page while the run goes)."""
    run = registry.run(run_id)
    settings = run["settings"]
    nodes = registry.node_figures(run_id)
    return {"run": run_id, "skills": run_skills(registry, run_id), "model": settings.get("model"),
            "endpoint": "embedded llama.cpp" if not settings.get("base_url") else "external",
            "status": shown_status(home, run), "counts": registry.counts(run_id),
            "wall_seconds": run["wall_seconds"], "cost": _cost(registry, run_id),
            "reviews": registry.review_counts(run_id), "nodes": nodes, "edges": registry.edge_figures(run_id),
            "updated": run["updated"]}


def _cost(registry: Registry, run_id: str) -> float | None:
    """What the run's calls cost, if the store keeps a spend ledger (issue 16's budgets: Registry.spent)."""
    spent = getattr(registry, "spent", None)
    return getattr(spent(run_id), "cost", None) if spent else None


def graph_svg(registry: Registry, run_id: str, skill_name: str) -> bytes:
    skill = skills.load(skill_name)
    return diagram.render(diagram.diagram(skill, registry.node_figures(run_id), registry.edge_figures(run_id)), "svg")


def headline(sample: dict) -> str:
    """The line a list shows for a sample: its query (rag) or its task's first field, else its user turn."""
    meta = sample.get("metadata") or {}
    round_ = meta.get("refinement_round") or 0
    queries = [r["query"] for r in meta.get("refinements") or [] if r.get("query") and r.get("round", 0) <= round_]
    if round_ and queries:
        return queries[-1]
    if meta.get("original_query"):
        return meta["original_query"]
    task = next((v for v in (meta.get("task") or {}).values() if isinstance(v, str) and v.strip()), None)
    return task or next((m.get("content") or "" for m in sample["messages"] if m["role"] == "user"), "")


def _sample_item(run_id: str, seed: dict, sample: dict, review: dict | None) -> dict[str, Any]:
    meta = sample.get("metadata") or {}
    dropped = export.rejected_by({k: v for k, v in meta.items() if k != "review"})
    user = headline(sample)
    return {"id": sample["id"], "kind": "sample", "skill": sample.get("skill"), "seed_id": seed["id"],
            "task_type": meta.get("task_type"), "round": meta.get("refinement_round"),
            "status": "rejected" if dropped else "accepted", "why": dropped,
            "verdict": review["verdict"] if review else None, "note": review["note"] if review else None,
            "title": user[:200]}


def _seed_item(seed: dict) -> dict[str, Any]:
    why = f"{seed['node'] or '-'}: {seed['reason'] or seed['error'] or ''}" if seed["status"] != "pending" else None
    return {"id": SEED_PREFIX + seed["id"], "kind": "seed", "skill": seed["skill"], "seed_id": seed["id"],
            "task_type": seed["task_type"], "round": None, "status": seed["status"], "why": why, "verdict": None,
            "note": None, "title": f"{seed['title'] or seed['source']} (chunk {seed['chunk']})"}


def items(registry: Registry, run_id: str, *, skill: str = "", task_type: str = "", status: str = "",
          verdict: str = "", q: str = "", limit: int = 500) -> dict[str, Any]:
    """The run's samples and sample-less seeds, filtered. `verdict`: accepted | rejected | none.
    `q`: case-insensitive text anywhere in the sample's messages (a seed's: its text and reason)."""
    reviews = registry.reviews(run_id)
    seeds = {row["id"]: row for row in registry.db.query(
        "select id, skill, task_type, status, reason, node, error, title, source, chunk, text from seeds "
        "where run_id = ? order by ordinal", [run_id])}
    needle = q.strip().lower()
    out: list[dict] = []
    facets: dict[str, set] = {"skill": set(), "task_type": set()}
    with_samples: set[str] = set()
    rows: list[tuple[dict, str]] = []
    for sample_id, body in registry.samples(run_id):
        sample = json.loads(body)
        seed_id = (sample.get("metadata") or {}).get("seed_id")
        with_samples.add(seed_id)
        item = _sample_item(run_id, seeds.get(seed_id) or {"id": seed_id}, sample, reviews.get(sample_id))
        rows.append((item, needle and json.dumps(sample["messages"], ensure_ascii=False).lower()))
    for seed in seeds.values():
        if seed["id"] not in with_samples:
            rows.append((_seed_item(seed), needle and f"{seed['text']}\n{_seed_item(seed)['why']}".lower()))
    for item, text in rows:
        facets["skill"].add(item["skill"])
        facets["task_type"].add(item["task_type"])
        if skill and item["skill"] != skill or task_type and item["task_type"] != task_type:
            continue
        if status and item["status"] != status:
            continue
        if verdict and (item["verdict"] or "none") != verdict:
            continue
        if needle and needle not in text:
            continue
        out.append(item)
    return {"total": len(out), "items": out[:limit],
            "facets": {k: sorted(v for v in values if v) for k, values in facets.items()}}


def lineage(registry: Registry, run_id: str, item_id: str) -> dict[str, Any] | None:
    """An item step by step: the seed chunk, each node run with what it produced and spent (transformed
    content, seed instruction, each suggestion and edit with its round, the answer), the checks and gate
    verdicts, the reviewer's verdict; None if the run has no such item."""
    if item_id.startswith(SEED_PREFIX):
        seed_id, sample = item_id[len(SEED_PREFIX):], None
    else:
        sample = registry.sample(item_id)
        if sample is None or sample["run_id"] != run_id:
            return None
        seed_id = sample["seed_id"]
    try:
        seed = registry.seed(run_id, seed_id)
    except KeyError:
        return None
    review = registry.reviews(run_id).get(item_id) if sample else None
    meta = (sample or {}).get("metadata") or {}
    return {"id": item_id, "kind": "sample" if sample else "seed",
            "seed": {k: seed[k] for k in ("id", "source", "title", "kind", "chunk", "text", "skill", "transformation",
                                          "task_type", "status", "reason", "node", "error", "llm_calls", "tokens")},
            "steps": [{k: s[k] for k in ("node", "outcome", "next", "llm_calls", "tokens", "cache_hits", "seconds",
                                         "detail")} for s in registry.steps(run_id, seed_id)],
            "sample": sample and {"messages": sample["messages"], "tools": sample.get("tools"),
                                  "round": meta.get("refinement_round"), "parent": meta.get("parent_sample_id"),
                                  "transformation": meta.get("transformation"), "task": meta.get("task"),
                                  "refinements": meta.get("refinements") or [], "checks": meta.get("checks") or [],
                                  "gates": meta.get("gates") or [], "rejected_by": export.rejected_by(
                                      {k: v for k, v in meta.items() if k != "review"})},
            "review": review and {"verdict": review["verdict"], "note": review["note"], "at": review["at"]}}


def set_verdict(registry: Registry, run_id: str, sample_id: str, body: Any) -> dict:
    """Store a reviewer's verdict on a sample of the run. Raises BadVerdict (one line) on bad input,
    KeyError if the run has no such sample."""
    if not isinstance(body, dict):
        raise BadVerdict('the body must be a JSON object: {"verdict": "accepted"|"rejected", "note": "..."}')
    unknown = set(body) - {"verdict", "note"}
    if unknown:
        raise BadVerdict(f"unknown field {sorted(unknown)[0]!r} (verdict, note)")
    verdict, note = body.get("verdict"), body.get("note", "")
    if verdict not in VERDICTS:
        raise BadVerdict(f"verdict must be \"accepted\" or \"rejected\", not {json.dumps(verdict)[:60]}")
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise BadVerdict("note must be a string")
    if len(note) > NOTE_CHARS:
        raise BadVerdict(f"note is {len(note)} characters; at most {NOTE_CHARS}")
    sample = registry.sample(sample_id)
    if sample is None or sample["run_id"] != run_id:
        raise KeyError(sample_id)
    row = registry.set_review(run_id, sample_id, verdict, note.strip())
    return {"id": sample_id, "verdict": row["verdict"], "note": row["note"], "at": row["at"]}
