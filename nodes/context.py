"""What every node can reach at run time (LangGraph runtime context: never checkpointed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from teachgraph.client.llm import LLM
from teachgraph.skills import Skill

if TYPE_CHECKING:
    from teachgraph.gates.run import RunGates


class Corpus(Protocol):
    """The run's seed corpus: seed texts and full-text search over every seed's passages."""

    def seed(self, seed_id: str) -> dict: ...

    def search(self, query: str, *, exclude_seed: str, limit: int,
               exclude_texts: set[str] = frozenset()) -> list[dict]: ...


@dataclass
class RunContext:
    run_id: str
    skill: Skill
    llm: LLM
    corpus: Corpus
    gates: "RunGates | None" = None      # the run's quality gates (nodes/gates.py); None: no gates
