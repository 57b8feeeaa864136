"""The one shape of a sample (a line of the JSONL output) and of its refinement history, for every graph.

Keys a graph does not have are left out, not written as null (flow samples have no `original_query`,
rag samples no `task` or `checks`); keys every sample has are always written, null included.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from teachgraph.nodes.context import RunContext


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Refinement(_Record):
    """One round of the suggester -> editor loop (graphs/refinement.py)."""

    round: int
    operation: str | None = None     # what the suggester chose: a goal (flow skills) or an operation (rag);
    # absent when the suggester itself failed
    suggestion: str | None = None
    query: str | None = None         # rag: the query after the edit
    changed: list[str] | None = None  # flow: the task fields the edit changed
    note: str | None = None          # what applying it did (rag), or why refinement stopped

    def record(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Transformation(_Record):
    agent: str | None                # the transformation agent (flow) or "transform" (rag)
    title: str | None = None         # rag: the seed's title and search query, and the context's passages
    note: str | None = None          # why the transformation fell back, if it did
    seed_support: float | None = None  # flow, [transform] keep_facts: share of the passage's content words in the seed
    fallback: str | None = None      # "seed_text": the transformed passage lost the seed's facts, the seed replaced it
    search_query: str | None = None
    passages: list[dict[str, Any]] | None = None


class Metadata(_Record):
    seed_id: str
    seed_source: str
    transformation: Transformation
    task_type: str
    task: dict[str, Any] | None = None          # flow: the task's fields
    refinement_round: int
    parent_sample_id: str | None
    original_query: str | None = None           # rag: the seed query, before refinement
    refinements: list[Refinement]
    checks: list[dict[str, Any]] | None = None  # flow: the checks the answer passed (nodes/checks.py)
    gates: list[dict[str, Any]] | None = None   # the quality gates' verdicts, added by the gate node (nodes/gates.py)
    model: str


class Sample(_Record):
    id: str
    skill: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None   # tool use: the tools offered, as OpenAI function definitions
    metadata: Metadata

    def record(self) -> dict[str, Any]:
        """The JSON object the output holds (unset optional keys left out)."""
        return self.model_dump(exclude_unset=True)


def sample_id(ctx: RunContext, state: dict, round: int) -> str:
    return f"{ctx.run_id}:{state['seed_id']}:r{round}"


def make_sample(ctx: RunContext, state: dict, *, round: int, refined: bool, messages: list[dict],
                transformation: dict[str, Any], tools: list[dict] | None = None,
                **graph_fields: Any) -> dict[str, Any]:
    """A sample of the item at refinement `round`; a refined item's parent is the seed item (round 0)."""
    seed = ctx.corpus.seed(state["seed_id"])
    metadata = Metadata(seed_id=state["seed_id"], seed_source=seed["source"],
                        transformation=Transformation(**transformation), task_type=state["task_type"],
                        refinement_round=round, parent_sample_id=sample_id(ctx, state, 0) if refined else None,
                        refinements=state.get("history", []), model=ctx.llm.model_name, **graph_fields)
    offered = {"tools": tools} if tools is not None else {}  # left out, not null, for skills without tools
    return Sample(id=sample_id(ctx, state, round), skill=ctx.skill.name, messages=messages, **offered,
                  metadata=metadata).record()
