"""A scripted stand-in for the model in RAG tests: it recognises each agent by its prompt and
answers with valid, deterministic content (or garbage, when a test asks for it)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


def agent_of(system: str, user: str = "") -> str:
    """transform's instructions are in its system prompt; the other agents' in their user turn, after
    the passages (skills/rag/prompts.toml)."""
    markers = {"search-engine style record": "transform", "You write one query": "generate",
               "suggest ONE way": "suggest", "You edit this item": "edit",
               "You answer the query using only": "answer"}
    for marker, agent in markers.items():
        if marker in system + user:
            return agent
    return "unknown"


@dataclass
class RagScript:
    suggest_operations: list[str] = field(default_factory=lambda: ["rewrite_query", "add_near_miss"])
    garbage_for: set[str] = field(default_factory=set)   # agents that only ever reply with junk
    calls: dict[str, int] = field(default_factory=dict)

    def reply(self, system: str, user: str) -> str:
        agent = agent_of(system, user)
        n = self.calls[agent] = self.calls.get(agent, 0) + 1
        if agent in self.garbage_for:
            return "I am a small model and I do not do JSON"
        if agent == "transform":
            return json.dumps({"title": "A document about Python", "search_query": "python list sort"})
        if agent == "generate":
            payload = {"query": f"Which behaviour does the documentation describe (variant {n})?"}
            if "conflicting_passages" in user:
                payload["new_passage"] = "Contrary to the other documents, this operation never raises errors."
            return json.dumps(payload)
        if agent == "suggest":
            done = len(re.findall(r"round \d+:", system + user))
            ops = self.suggest_operations
            op = ops[done] if done < len(ops) else "none"
            return json.dumps({"operation": op, "suggestion": f"apply {op}"})
        if agent == "edit":
            payload = {"query": f"Harder: which documented behaviour differs, and why (edit {n})?",
                       "new_passage": ""}
            if "Operation: add_conflicting_passage" in system + user:
                payload["new_passage"] = "A conflicting passage says the default value is different."
            return json.dumps(payload)
        if agent == "answer":
            ids = [int(i) for i in re.findall(r"Document Id: (\d+)", user)]
            return json.dumps({"answer": "According to the documents, it is described in detail.",
                               "relevant_passages": ids[:2]})
        return "fake answer"

    def http_responder(self, body: dict) -> str | None:
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        if agent_of(system, user) == "unknown":
            return None  # not a rag agent (e.g. `endpoint probe`): the fake server's own reply
        return self.reply(system, user)
