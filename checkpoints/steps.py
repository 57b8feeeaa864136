"""Per-node figures of a run: one `steps` row each time a graph node of a seed ends (or fails), with the
LLM calls and tokens it spent, its wall time, the next node its router chose, and a trimmed copy of what
it produced (the lineage the review page shows: transformed content, suggestion, edit, answer, checks).

Recorded by a LangChain callback handler on the seed's graph run, so no node has to know about it: a
node's state update already carries its usage (nodes.agent.usage_update). Seeds' checkpoints are
deleted once their outcome is recorded; these rows stay."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from teachgraph.checkpoints import storage
from teachgraph.checkpoints.registry import Registry

TEXT_CHARS = 2000        # a string in a step's detail is cut here
LIST_ITEMS = 12          # ...a list after this many items
DETAIL_CHARS = 12000     # ...and a detail whose JSON is longer keeps only its short values
USAGE_KEYS = ("llm_calls", "tokens", "cache_hits")
# state the lineage does not need (large or repeated elsewhere): samples are in the samples table
LEFT_OUT = {"pool", "content_data", "original", "max_rounds"}


def trimmed(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= TEXT_CHARS else value[:TEXT_CHARS] + f" ... [{len(value)} chars]"
    if isinstance(value, dict):
        return {str(k): trimmed(v, depth + 1) for k, v in value.items()} if depth < 4 else "..."
    if isinstance(value, (list, tuple)):
        items = [trimmed(v, depth + 1) for v in value[:LIST_ITEMS]] if depth < 4 else []
        return items + ([f"... {len(value) - LIST_ITEMS} more"] if len(value) > LIST_ITEMS else [])
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def step_detail(update: dict) -> dict:
    """What a node's state update says, for the lineage: samples by id, the last refinement record."""
    detail: dict[str, Any] = {}
    for key, value in update.items():
        if key in USAGE_KEYS or key in LEFT_OUT:
            continue
        if key == "samples":
            value = [s.get("id") for s in value or []]
        elif key == "history":
            value = (value or [])[-1:]
        elif key == "answering" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "messages"} | {"last": (value.get("messages") or [])[-1:]}
        detail[key] = trimmed(value)
    text = json.dumps(detail, ensure_ascii=False)
    if len(text) > DETAIL_CHARS:
        detail = {k: v for k, v in detail.items() if len(json.dumps(v, ensure_ascii=False)) < 500}
        detail["trimmed"] = True
    return detail


class StepRecorder(BaseCallbackHandler):
    """Records a seed's node runs as they end. A node task is the chain LangGraph tags `graph:step:N`
    whose name is the node's; the router that runs inside it reports the next node first."""

    run_inline = True          # on the event loop's thread, with the registry's connection

    def __init__(self, registry: Registry, run_id: str, seed_id: str, skill: str):
        self.registry, self.run_id, self.seed_id, self.skill = registry, run_id, seed_id, skill
        self._open: dict[UUID, dict] = {}        # node task -> {node, started, next}
        self._routers: dict[UUID, UUID] = {}     # router run -> its node task

    def on_chain_start(self, serialized, inputs, *, run_id: UUID, parent_run_id: UUID | None = None,
                       tags: list[str] | None = None, metadata: dict | None = None, **kwargs: Any) -> None:
        node = (metadata or {}).get("langgraph_node")
        name = kwargs.get("name")
        if node and name == node and any(t.startswith("graph:step:") for t in tags or ()):
            self._open[run_id] = {"node": node, "started": time.monotonic(), "next": None}
        elif parent_run_id in self._open:
            self._routers[run_id] = parent_run_id

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        task = self._routers.pop(run_id, None)
        if task is not None:
            if isinstance(outputs, str) and task in self._open:
                self._open[task]["next"] = outputs
            return
        step = self._open.pop(run_id, None)
        if step is None or not isinstance(outputs, dict):
            return
        outcome = "rejected" if outputs.get("rejected") else "ok"
        self._record(step, outcome, outputs)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._routers.pop(run_id, None)
        step = self._open.pop(run_id, None)
        if step is None or isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
            return   # a stopped run: the node runs again on resume, and is recorded then
        usage = getattr(error, "usage", None)  # nodes.agent.NodeFailed carries the calls it made
        spent = {"llm_calls": getattr(usage, "calls", 0), "tokens": getattr(usage, "tokens", 0),
                 "cache_hits": getattr(usage, "cache_hits", 0)}
        self._record(step, "failed", {**spent, "error": f"{type(error).__name__}: {error}"})

    def _record(self, step: dict, outcome: str, update: dict) -> None:
        try:
            self._insert(step, outcome, update)
        except (sqlite3.Error, storage.StorageError, OSError):
            # A step is a figure, not an outcome: runs.db failing here fails the seed's own write next,
            # which stops the run with one line (LangChain would only log a warning for this handler).
            pass

    def _insert(self, step: dict, outcome: str, update: dict) -> None:
        self.registry.record_step({
            "run_id": self.run_id, "seed_id": self.seed_id, "skill": self.skill, "node": step["node"],
            "outcome": outcome, "next": step["next"],
            **{k: int(update.get(k) or 0) for k in USAGE_KEYS},
            "seconds": round(time.monotonic() - step["started"], 4),
            "detail": json.dumps(step_detail(update), ensure_ascii=False), "at": time.time()})
