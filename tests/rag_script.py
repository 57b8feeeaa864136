"""A scripted stand-in for the model in RAG tests: it recognises each agent by its prompt and
answers with valid, deterministic content (or garbage, when a test asks for it)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field


WORDS = ("river", "stone", "garden", "lamp", "window", "forest", "table", "bridge", "cloud", "harbor", "meadow",
         "candle", "mirror", "ladder", "engine", "basket", "violin", "pepper", "island", "rocket", "tunnel", "saddle",
         "marble", "falcon", "copper", "lantern", "orchard", "compass", "velvet", "anchor", "thunder", "quartz")


def distinct_words(prompt: str, n: int = 16) -> str:
    """Words that depend on the whole prompt: the same prompt (a resumed call) gets the same reply,
    another prompt a different one, as a model's would be. One reply for every prompt would make every
    sample a duplicate, which the run's gates (rightly) drop."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return " ".join(WORDS[b % len(WORDS)] for b in digest[:n])


def grounded_words(prompt: str, n: int = 16) -> str:
    """Like distinct_words, but drawn from the prompt's own words, as an answer from the passages is: rag's
    grounding gate drops a reply whose words the passages do not have."""
    vocabulary = sorted(set(re.findall(r"[A-Za-z]{4,}", prompt)))
    if len(vocabulary) < n:
        return distinct_words(prompt, n)
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return " ".join(vocabulary[int.from_bytes(digest[2 * i:2 * i + 2], "big") % len(vocabulary)] for i in range(n))


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


def agent_of_request(body: dict) -> str:
    """The rag agent an OpenAI request body (the fake server's record of a call) is for."""
    messages = body.get("messages", [])
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    return agent_of(system, user)


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
            return json.dumps({"answer": f"According to the documents, {grounded_words(user)}.",
                               "relevant_passages": ids[:2]})
        return "fake answer"

    def http_responder(self, body: dict) -> str | None:
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        if agent_of(system, user) == "unknown":
            return None  # not a rag agent (e.g. `endpoint probe`): the fake server's own reply
        return self.reply(system, user)
