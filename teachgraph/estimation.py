"""What a run will cost before it starts: calls, tokens and dollars, from the graph's shape and the
skill's prompts rendered on the real seeds (`python cli.py runs estimate SKILL --seeds ...`).

Calls per seed follow the graphs (graphs/skeleton.py, rag.py, flow.py) on their expected path, with
no corrections and nothing rejected: transform (none for the identity transformation, none at all
for a seed the skill cannot use), extend when the skill has it, generate, a suggester and an editor
call per refinement round, then an answer for the seed's task and, when there were rounds, for the
refined one; a follow-up conversation adds its turns (an answer and a follow-up message each), a
tool-use answer a simulated tool result and a second answer.

Input tokens: every agent's system and user templates rendered with the seed's own text (transform),
its passages (rag) or its material (the transformed content is taken to be as long as the seed, up
to transform's reply cap), the task type's own description, and replies of earlier agents taken at
their expected length; plus the schema hint each system prompt gets. Output tokens: each agent's
reply cap (its max_tokens in prompts.toml, else the run's --max-tokens) times OUTPUT_SHARE, since a
reply's length depends on the model. Tokens are counted with tiktoken's cl100k_base when its encoding
is on disk (it is downloaded, not bundled), else as characters / 4 (what OpenAI suggests as a rule of
thumb); `Estimate.tokenizer` says which.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Callable, Iterable

from teachgraph import skills as skill_library
from teachgraph.client.budget import Prices
from teachgraph.skills import Skill

OUTPUT_SHARE = 0.5          # of an agent's reply cap: replies to these prompts fill about a third to a half
SCHEMA_HINT_CHARS = 240     # "Reply with one JSON object only, with these fields: ..." (client/llm.py schema_hint)
# placeholders that carry the seed's material (the transformed content, passages, a transcript with it)
MATERIAL = {"content", "passages", "sample", "conversation", "tools", "code", "examples", "puzzle", "text",
            "modified_text", "extracted", "starter_code", "calls", "result"}


@dataclass
class Estimate:
    skill: str
    seeds: int
    rounds: int | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None                 # None: no price known for the model
    tokenizer: str
    per_agent: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Estimate":
        return cls(**data)


def _tiktoken_counter() -> Callable[[str], int] | None:
    """cl100k_base, only when its encoding file is already on disk: tiktoken downloads it otherwise."""
    try:
        import tiktoken
    except ImportError:
        return None
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
        os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not (Path(folder) / hashlib.sha1(url.encode()).hexdigest()).is_file():
        return None
    try:
        encoding = tiktoken.get_encoding("cl100k_base")
    except Exception:  # a damaged cache file: the rule of thumb still works
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def token_counter() -> tuple[Callable[[str], int], str]:
    counter = _tiktoken_counter()
    if counter is not None:
        return counter, "tiktoken cl100k_base"
    return (lambda text: len(text) // 4), "characters / 4"


def agent_calls(skill: Skill, rounds: int, transformation: str | None, kind: str) -> list[str]:
    """The agents one seed calls on its expected path, in order (one entry per call)."""
    if skill.transformations:                      # the flow graphs: a transformation agent per seed
        if not transformation:
            return []                              # rejected at transform: the skill cannot use it
        first = [] if skill.transformation(transformation).is_identity else ["transform"]
    else:                                          # rag: its own transform step, always asked
        first = ["transform"]
    if skill.spec.transform.extend:
        first.append("extend")
    calls = [*first, "generate", *(["suggest", "edit"] * rounds)]
    response = skill.spec.response
    for _ in range(2 if rounds > 0 else 1):        # the seed's task, then the refined one
        if response.mode == "follow_up":
            calls += ["answer", *(["follow_up", "answer"] * (response.turns - 1))]
        elif response.mode == "tool_calls":
            calls += ["answer", "simulate_tools", "answer"]
        else:
            calls.append("answer")
    return calls


def _cap(skill: Skill, agent: str, max_tokens: int) -> int:
    prompt = skill.prompts.get(agent)
    return min(filter(None, (prompt.max_tokens if prompt else None, max_tokens)))


def _rendered(skill: Skill, agent: str, values: dict[str, str]) -> str:
    """The agent's system and user messages as it would get them (a placeholder no value covers is an
    earlier agent's reply), with the schema hint."""
    prompt = skill.prompts.get(agent)
    hint = "x" * SCHEMA_HINT_CHARS
    if prompt is None:
        return hint
    names = set(Template(prompt.system).get_identifiers()) | set(Template(prompt.user).get_identifiers())
    system, user = prompt.render(**{name: values.get(name, values["reply"]) for name in names})
    return f"{system}\n\n{hint}{user}"


def _sized(text: str, chars: int) -> str:
    """`text` cut, or repeated, to `chars` characters (material of the seed's length and words)."""
    if not text or chars <= 0:
        return "x" * max(0, chars)
    return (text * (chars // len(text) + 1))[:chars]


def estimate(seeds: Iterable[dict], *, rounds: int | None, max_tokens: int, prices: Prices | None,
             skill_name: str, skill_for: Callable[[str | None], Skill] | None = None) -> Estimate:
    """`seeds`: dicts with skill, kind, transformation, task_type and text (as the registry holds them,
    or as `runs estimate` deals them). `rounds` None: each skill's own."""
    count, name = token_counter()
    loaded: dict[str, Skill] = {}

    def skill_of(name_: str | None) -> Skill:
        key = name_ or skill_name
        if key not in loaded:
            loaded[key] = skill_for(key) if skill_for else skill_library.load(key)
        return loaded[key]

    per_agent: dict[str, dict[str, int]] = {}
    total_seeds = 0
    for seed in seeds:
        total_seeds += 1
        skill = skill_of(seed.get("skill"))
        seed_rounds = skill.spec.refinement.rounds if rounds is None else rounds
        text = seed.get("text") or ""
        task = next((t for t in skill.taxonomy if t.name == seed.get("task_type")), skill.taxonomy[0])
        transformation = seed.get("transformation")
        agent = skill.transformation(transformation) if transformation and skill.transformations else None
        if skill.transformations and agent is not None and not agent.is_identity:
            material = _sized(text, min(len(text), 4 * _cap(skill, "transform", max_tokens)))
        elif skill.transformations:
            material = text
        else:   # rag: the seed's own passages and the distractors retrieved from other seeds
            ctx = skill.spec.context
            own = min(len(text), ctx.own_passages_max * ctx.passage_chars)
            material = _sized(text, own + ctx.distractors * ctx.passage_chars)
        values = {"source": seed.get("source") or "document", "task_type": task.name,
                  "task_description": task.description, "task_guidance": task.guidance,
                  "transformation": transformation or "",
                  "transformation_description": agent.description if agent else "",
                  "skill_title": skill.title, "skill_description": skill.description,
                  "reply": _sized(text, int(4 * OUTPUT_SHARE * _cap(skill, "generate", max_tokens)))}
        values.update({key: material for key in MATERIAL})
        for step in agent_calls(skill, seed_rounds, transformation, seed.get("kind") or "text"):
            step_values = {**values, "text": text} if step == "transform" else values
            figures = per_agent.setdefault(step, {"calls": 0, "input_tokens": 0, "output_tokens": 0})
            figures["calls"] += 1
            figures["input_tokens"] += count(_rendered(skill, step, step_values))
            figures["output_tokens"] += int(OUTPUT_SHARE * _cap(skill, step, max_tokens))
    calls = sum(f["calls"] for f in per_agent.values())
    input_tokens = sum(f["input_tokens"] for f in per_agent.values())
    output_tokens = sum(f["output_tokens"] for f in per_agent.values())
    return Estimate(skill=skill_name, seeds=total_seeds, rounds=rounds, calls=calls, input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cost=prices.cost(input_tokens, output_tokens) if prices is not None else None,
                    tokenizer=name, per_agent=per_agent)


def share(estimated: float, actual: float) -> str:
    """`actual` as a share of its estimate, e.g. "92%"."""
    return f"{100 * actual / estimated:.0f}%" if estimated else "-"
