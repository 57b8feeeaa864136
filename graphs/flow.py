"""The AgentInstruct flow every skill but rag runs, configured by the skill's data.

    transform [-> extend] -> generate -> [suggest <-> edit]* -> answer <-> (follow_up | simulate_tools)

- transform (content transformation): the seed's transformation agent (dealt when the run registered
  the seed) turns the raw seed into the skill's material; `identity` passes it through with no call.
  A seed whose kind the skill cannot use is rejected here, with the reason, at no cost.
- extend (optional, tool use): hypothesises sibling APIs of the same library.
- generate (seed instruction generation): one task of the seed's task type, with the fields in
  skill.toml [item].
- suggest/edit (refinement): the skill's goals from skill.toml [refinement]; shared loop.
- answer: answers the seed task and, if refinement changed it, the refined one. Each answer is
  checked (nodes/checks.py: sandboxed tests, arithmetic, answer keys); a failed check goes back to
  the answer agent with the failure, then rejects. `follow_up` adds user turns (conversation);
  `simulate_tools` writes tool results for the tool calls the answer made (tool use).

One node, one model call: a resume repeats at most the call in flight.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from string import Template
from typing import Any, Literal, NotRequired, TypedDict

from langgraph.graph import END, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, create_model

from teachgraph.gates.text import support
from teachgraph.graphs.refinement import unless_rejected, when
from teachgraph.graphs.skeleton import Agent, instruction_graph
from teachgraph.nodes import checks, schemas
from teachgraph.nodes.agent import SeedInput, SeedState, agent_node, ask, given, usage_update
from teachgraph.nodes.context import RunContext
from teachgraph.nodes.gates import check_gates  # noqa: F401  (skills.check_gates' hook for this graph)
from teachgraph.client.llm import UnusableOutput
from teachgraph.nodes.sample import Refinement, make_sample
from teachgraph.skills import Skill
from teachgraph.skills.spec import FieldSpec, Goal, SkillSpec

DEFAULT_CONTENT = {"content": FieldSpec(description="the transformed material, plain text", max_length=4000)}


# ---- state ----

class FlowInput(SeedInput):
    transformation: NotRequired[str | None]   # dealt when the run registered the seed; None: it cannot use its kind


class Answering(TypedDict):
    """The conversation being answered: which item, its messages so far, and the answer agent's attempt."""

    index: int                   # into items_to_answer: 0 the seed task, 1 the refined one
    messages: list[dict]
    turn: int                    # user turns so far (conversation)
    attempt: int                 # corrections sent after failed checks
    feedback: str                # the failed checks' feedback, for the next attempt
    checks: list[dict]           # the verdicts of the replies that passed


class FlowState(SeedState, total=False):
    transformation: str | None
    content: str                 # the material tasks are written about (rendered)
    content_data: dict           # the transformation's structured reply (e.g. an API list)
    transform_note: str
    seed_support: float          # [transform] keep_facts: the share of the passage's content words in the seed
    transform_fallback: str      # "seed_text": the transformed passage lost the seed's facts and was replaced
    item: dict                   # current task: the [item] fields, plus content, round (and tools)
    original: dict               # the seed task, before refinement
    operation: str               # the refinement goal the suggester chose
    suggestion: str
    history: list[dict]          # one nodes.sample.Refinement record per round
    answering: Answering
    next_step: str               # where answer/follow_up/simulate_tools go next


# ---- what each agent's prompt is given (skills.check_placeholders refuses any other $name) ----

class SkillValues(TypedDict):
    skill_title: str
    skill_description: str


class TransformInputs(SkillValues):
    source: str
    text: str
    transformation: str
    transformation_description: str


class ExtendInputs(SkillValues):
    content: str


class GenerateInputs(SkillValues):
    task_type: str
    task_description: str
    task_guidance: str
    content: str
    transformation: str
    transformation_description: str


class SuggestInputs(SkillValues):
    item: str                    # the task as the sample's user turn shows it
    goals: str
    history: str


class EditInputs(SuggestInputs):
    goal: str
    goal_description: str
    suggestion: str
    fields: str
    content: str


class AnswerInputs(SkillValues):
    conversation: str
    tools: str


class CorrectionInputs(TypedDict):
    feedback: str


class FollowUpInputs(SkillValues):
    conversation: str
    follow_up_kind: str


class SimulateToolsInputs(SkillValues):
    calls: str
    tools: str


def prompt_inputs(spec: SkillSpec) -> dict[str, dict[str, frozenset[str]]]:
    """The $names each agent's templates may use, by agent and part (system, user, assistant)."""
    agents = {"transform": given(TransformInputs), "generate": given(GenerateInputs),
              "suggest": given(SuggestInputs), "edit": given(EditInputs), "answer": given(AnswerInputs),
              "correction": given(CorrectionInputs)}
    if spec.transform.extend:
        agents["extend"] = given(ExtendInputs)
    if spec.response.mode == "follow_up":
        agents["follow_up"] = given(FollowUpInputs)
    if spec.response.mode == "tool_calls":
        agents["simulate_tools"] = given(SimulateToolsInputs)
    item = {*spec.item, "content", "round", *(["tools"] if any(f.type == "api_names" for f in spec.item.values())
                                              else [])}
    reply = {*spec.response.fields, *(["message"] if spec.response.mode == "tool_calls" else [])}
    extras = {name for check in spec.checks if check in checks.CHECKS for name in checks.CHECKS.get(check).extras}
    agents["sample"] = {"system": frozenset({"tools"}), "user": frozenset(item), "assistant": frozenset(reply | extras)}
    return agents


def render(template: str, **values: Any) -> str:
    """A sample template filled in; empty optional fields leave no runs of blank lines."""
    text = Template(template).safe_substitute({k: "" if v is None else v for k, v in values.items()})
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---- transform ----

def content_schema(skill: Skill) -> type[BaseModel]:
    return schemas.build(f"{skill.name.title()}Material", skill.spec.content or DEFAULT_CONTENT)


def judged_content_schema(skill: Skill) -> type[BaseModel]:
    """With [transform] fit set, the agent first says whether the seed suits the skill at all (tool use
    on a poem does not): a seed that does not fit is rejected with the agent's reason."""
    fit = skill.spec.transform.fit
    material = content_schema(skill)
    return _judged(material, fit) if fit else material


# The schema builders below are cached on what the schema depends on: building a pydantic model
# costs ~1 ms, and nodes/llm.py caches each class's JSON schema, which a fresh class per call misses.
@functools.lru_cache(maxsize=256)
def _judged(material: type[BaseModel], fit: str) -> type[BaseModel]:
    judged = create_model(f"{material.__name__}Judged",
                          fits=(bool, Field(description=f"true if {fit}; false otherwise")),
                          why_not=(str, Field(default="", max_length=300,
                                              description="if fits is false: why, in one sentence")))
    return create_model(material.__name__, __base__=judged, **{
        name: (f.annotation, f) for name, f in material.model_fields.items()})


def render_content(data: dict) -> str:
    if set(data) == {"content"}:
        return str(data["content"]).strip()
    return json.dumps(data, ensure_ascii=False, indent=1)


async def transform(state: FlowState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    skill = ctx.skill
    seed = ctx.corpus.seed(state["seed_id"])
    name = state.get("transformation")
    if not name:
        takes = sorted({kind for t in skill.transformations for kind in t.kinds})
        return {"rejected": f"skill {skill.name} cannot use a {seed['kind']} seed (it takes {' or '.join(takes)})",
                "rejected_by": "transform"}
    agent = skill.transformation(name)
    if agent.is_identity:
        return {"content": seed["text"], "content_data": {"content": seed["text"]}}
    values: TransformInputs = {"source": seed["source"], "text": seed["text"], "transformation": agent.name,
                               "transformation_description": agent.description, **_skill_values(skill)}
    schema = judged_content_schema(skill)
    try:
        out, used = await ask(ctx, "transform", values, schema, state)
    except UnusableOutput as exc:
        if set(content_schema(skill).model_fields) == {"content"}:  # plain material: the seed itself serves
            return {"content": seed["text"], "content_data": {"content": seed["text"]},
                    "transform_note": f"{name} output unusable ({exc}); used the seed as it is",
                    **usage_update(exc.usage)}
        return {"rejected": f"{name}: {exc}", "rejected_by": "transform", **usage_update(exc.usage)}
    data = out.model_dump()
    if data.pop("fits", True) is False:
        why = data.pop("why_not", "").strip() or "no reason given"
        return {"rejected": f"skill {skill.name} cannot use this seed: {why}", "rejected_by": "transform",
                **usage_update(used)}
    data.pop("why_not", None)
    return {"content": render_content(data), "content_data": data, **usage_update(used),
            **kept_facts(skill, name, seed["text"], render_content(data))}


def kept_facts(skill: Skill, name: str, seed_text: str, content: str) -> dict[str, Any]:
    """[transform] keep_facts: a transformed passage must keep its seed's facts, measured as the share
    of its content words found in the seed (an invented "debate" shares few). Below the skill's
    min_seed_support it is replaced by the seed's own text (recorded in the sample's transformation
    as `fallback`, which a report counts) or the seed is rejected."""
    rule = skill.spec.transform
    if rule.keep_facts == "off":
        return {}
    share = round(support(content, seed_text), 3)
    if share >= rule.min_seed_support:
        return {"seed_support": share}
    problem = (f"{name} kept too little of the seed: {share:.0%} of its content words are in the seed "
               f"(needs {rule.min_seed_support:.0%})")
    if rule.keep_facts == "reject":
        return {"rejected": problem, "rejected_by": "transform"}
    return {"content": seed_text, "content_data": {"content": seed_text}, "seed_support": share,
            "transform_fallback": "seed_text", "transform_note": f"{problem}; used the seed's own text"}


def extend_inputs(state: FlowState, ctx: RunContext) -> ExtendInputs:
    return {"content": state["content"], **_skill_values(ctx.skill)}


def extend_apply(state: FlowState, out: BaseModel, ctx: RunContext) -> dict[str, Any]:
    """Add the hypothesised APIs whose names are new; the list stays small for small models."""
    data = dict(state["content_data"])
    key = next(iter(data))
    have = {api["name"] for api in data[key]}
    added = [api for api in out.model_dump()[key] if api["name"] not in have]
    data[key] = (data[key] + added)[:ctx.skill.spec.transform.max_apis]
    return {"content_data": data, "content": render_content(data)}


def keep_material(agent: str, state: FlowState, exc: UnusableOutput, ctx: RunContext) -> dict[str, Any]:
    return {"transform_note": f"{agent} output unusable ({exc}); kept the material as it was"}


# ---- generate / refine ----

def api_names(state: FlowState) -> tuple[str, ...]:
    return tuple(api["name"] for api in state.get("content_data", {}).get("apis", []))


def item_schema(state: FlowState, ctx: RunContext, *, with_content: bool = False) -> type[BaseModel]:
    """The [item] fields; `type = "api_names"` fields become lists of this seed's API names."""
    spec = ctx.skill.spec.item
    dynamic = {name: s for name, s in spec.items() if s.type == "api_names"}
    base = schemas.build(f"{ctx.skill.name.title()}Item", {k: v for k, v in spec.items() if k not in dynamic})
    if not dynamic and not with_content:
        return base
    return _item_with(base, tuple((name, s.description) for name, s in dynamic.items()), api_names(state),
                      with_content)


@functools.lru_cache(maxsize=256)
def _item_with(base: type[BaseModel], dynamic: tuple[tuple[str, str], ...], names: tuple[str, ...],
               with_content: bool) -> type[BaseModel]:
    extra: dict[str, Any] = {}
    for name, description in dynamic:
        # min_length: a grammar-constrained endpoint then cannot send an empty list (small models do)
        extra[name] = (list[Literal[names]] if names else list[str], Field(min_length=1, description=description))
    if with_content:
        extra["content"] = (str, Field(min_length=20, max_length=4000,
                                       description="the material, rewritten if the goal needs it, else unchanged"))
    return create_model(base.__name__, __base__=base, **extra) if extra else base


def generate_inputs(state: FlowState, ctx: RunContext) -> GenerateInputs:
    task = ctx.skill.task_type(state["task_type"])
    return {"task_type": task.name, "task_description": task.description, "task_guidance": task.guidance,
            "content": state["content"], **_transformation_values(state, ctx), **_skill_values(ctx.skill)}


def _tools_shown(state: FlowState, ctx: RunContext, item: dict) -> list[str] | None:
    names = api_names(state)
    if not names:
        return None
    task = ctx.skill.task_type(state["task_type"])
    if task.context_op == "drop_needed_apis":
        needed = set(item.get("needed_apis") or [])
        return [n for n in names if n not in needed]
    return list(names)


def generate_apply(state: FlowState, out: BaseModel, ctx: RunContext) -> dict[str, Any]:
    item = {**_clean(out.model_dump()), "content": state["content"], "round": 0}
    tools = _tools_shown(state, ctx, item)
    if tools is not None:
        item["tools"] = tools
    return {"item": item, "original": item, "round": 0, "history": []}


def _clean(data: dict) -> dict:
    return {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}


def suggest_schema(state: FlowState, ctx: RunContext) -> type[BaseModel]:
    return _suggestion(tuple(g.name for g in ctx.skill.spec.refinement.goals) + ("none",))


@functools.lru_cache(maxsize=256)
def _suggestion(names: tuple[str, ...]) -> type[BaseModel]:
    return create_model("Suggestion",
                        goal=(Literal[names], Field(description="one goal, or none")),
                        suggestion=(str, Field(max_length=600, description="what to change and why, briefly")))


def suggest_inputs(state: FlowState, ctx: RunContext) -> SuggestInputs:
    history = [f"round {h['round']}: {h['operation']}" for h in state.get("history", [])] or ["none yet"]
    listed = "\n".join(f"- {g.name}: {g.description}" for g in ctx.skill.spec.refinement.goals)
    return {"item": sample_user(ctx, state, state["item"]), "goals": listed, "history": "; ".join(history),
            **_skill_values(ctx.skill)}


def suggest_apply(state: FlowState, out: BaseModel, ctx: RunContext) -> dict[str, Any]:
    if out.goal == "none":
        return {"refine_done": True, "operation": "none", "suggestion": out.suggestion.strip()}
    return {"operation": out.goal, "suggestion": out.suggestion.strip()}


def edit_schema(state: FlowState, ctx: RunContext) -> type[BaseModel]:
    return item_schema(state, ctx, with_content=_goal(ctx.skill, state["operation"]).edits_content)


def _goal(skill: Skill, name: str) -> Goal:
    return next((g for g in skill.spec.refinement.goals if g.name == name), None) or Goal(name=name)


def edit_inputs(state: FlowState, ctx: RunContext) -> EditInputs:
    goal = _goal(ctx.skill, state["operation"])
    fields = {k: v for k, v in state["item"].items() if k not in ("round", "tools", "content")}
    return {**suggest_inputs(state, ctx), "goal": goal.name, "goal_description": goal.description,
            "suggestion": state["suggestion"], "fields": json.dumps(fields, ensure_ascii=False, indent=1),
            "content": state["item"]["content"]}


def edit_apply(state: FlowState, out: BaseModel, ctx: RunContext) -> dict[str, Any]:
    new = _clean(out.model_dump())
    item = {**state["item"], **new, "round": state["item"]["round"] + 1}
    tools = _tools_shown(state, ctx, item)
    if tools is not None:
        item["tools"] = tools
    entry = Refinement(round=item["round"], operation=state["operation"], suggestion=state["suggestion"],
                       changed=sorted(k for k in new if new[k] != state["item"].get(k)))
    return {"item": item, "round": item["round"], "history": [*state.get("history", []), entry.record()]}


# ---- answer ----

def items_to_answer(state: FlowState) -> list[dict]:
    """The seed task, and the refined one if refinement changed it (its child sample)."""
    original, final = state["original"], state["item"]
    same = {k: v for k, v in final.items() if k != "round"} == {k: v for k, v in original.items() if k != "round"}
    return [original] if same else [original, final]


def sample_user(ctx: RunContext, state: FlowState, item: dict) -> str:
    return render(ctx.skill.prompt("sample").user, **item)


def sample_tools(state: FlowState, item: dict) -> list[dict] | None:
    """The tools a tool-use task offers, as OpenAI tool definitions (None: the skill has no tools)."""
    tools = item.get("tools")
    if tools is None:
        return None
    return [as_tool(api) for api in state["content_data"]["apis"] if api["name"] in tools]


def sample_system(ctx: RunContext, state: FlowState, item: dict) -> str:
    system = ctx.skill.prompt("sample").system
    tools = sample_tools(state, item)
    if tools is not None:
        return render(system, tools=json.dumps(tools, ensure_ascii=False))
    return render(system)


def as_tool(api: dict) -> dict:
    """An API entry as an OpenAI tool definition."""
    props = {p["name"]: {"type": p["type"], "description": p["description"]} for p in api["parameters"]}
    required = [p["name"] for p in api["parameters"] if p["required"]]
    return {"type": "function", "function": {"name": api["name"], "description": api["description"],
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": required}}}


def _start(ctx: RunContext, state: FlowState, index: int) -> Answering:
    item = items_to_answer(state)[index]
    return {"index": index, "messages": [{"role": "user", "content": sample_user(ctx, state, item)}],
            "turn": 1, "attempt": 0, "feedback": "", "checks": []}


def transcript(messages: list[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    lines = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = "; ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in m["tool_calls"])
            lines.append(f"Assistant called: {calls}")
        elif m["role"] == "tool":
            lines.append(f"Tool result ({m['name']}): {m['content']}")
        else:
            lines.append(f"{m['role'].capitalize()}: {m['content']}")
    return "\n\n".join(lines)


class ToolCall(BaseModel):
    name: str = Field(description="the tool to call")
    arguments: str = Field(max_length=600, description='the arguments as a JSON object, e.g. {"city": "Paris"}')


def answer_schema(state: FlowState, ctx: RunContext, answering: Answering) -> type[BaseModel]:
    if ctx.skill.spec.response.mode != "tool_calls":
        return schemas.build(f"{ctx.skill.name.title()}Response", ctx.skill.spec.response.fields)
    if any(m["role"] == "tool" for m in answering["messages"]):  # results are in: the final reply
        return FinalReply
    return _tool_reply(tuple(items_to_answer(state)[answering["index"]].get("tools") or ()))


FinalReply = create_model("FinalReply", message=(str, Field(min_length=1, max_length=2000,
                                                            description="the reply to the user")))


@functools.lru_cache(maxsize=256)
def _tool_reply(tools: tuple[str, ...]) -> type[BaseModel]:
    if not tools:  # every API the task needs was taken away: there is nothing to call
        return create_model("ToolReply",
                            action=(Literal["ask_user", "cannot_do"],
                                    Field(description="cannot_do: no tool given can do it")),
                            calls=(list[ToolCall], Field(default_factory=list, max_length=0, description="always []")),
                            message=(str, Field(min_length=1, max_length=1000, description="what to tell the user")))
    call = create_model("Call", __base__=ToolCall, name=(Literal[tools], Field(description="the tool to call")))
    return create_model("ToolReply",
                        action=(Literal["call_tools", "ask_user", "cannot_do"],
                                Field(description="call_tools if the tools can do it with the values given; "
                                                  "ask_user if required values are missing; cannot_do if no "
                                                  "tool given can do it")),
                        calls=(list[call], Field(description="the calls, only for call_tools, else []")),
                        message=(str, Field(max_length=1000, description="what to tell the user (for ask_user "
                                                                          "or cannot_do), else empty")))


def answer_inputs(ctx: RunContext, state: FlowState, answering: Answering) -> AnswerInputs:
    item = items_to_answer(state)[answering["index"]]
    conversation = transcript(answering["messages"])
    if answering["feedback"]:
        _, correction = ctx.skill.prompt("correction").render(feedback=answering["feedback"])
        conversation = f"{conversation}\n\n{correction}"
    return {"conversation": conversation, "tools": sample_system(ctx, state, item) if item.get("tools") is not None
            else "", **_skill_values(ctx.skill)}


async def answer(state: FlowState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    answering = state.get("answering") or _start(ctx, state, 0)
    item = items_to_answer(state)[answering["index"]]
    try:
        out, used = await ask(ctx, "answer", answer_inputs(ctx, state, answering),
                              answer_schema(state, ctx, answering), state)
    except UnusableOutput as exc:
        return {**_item_failed(ctx, state, answering, f"answer: {exc}"), **usage_update(exc.usage)}
    response = _clean(out.model_dump())
    checked = {**item, "apis": state.get("content_data", {}).get("apis", [])}
    verdicts = await checks.check_answer(ctx, checked, response, used)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        feedback = "; ".join(v.feedback for v in failed)
        if answering["attempt"] < ctx.skill.spec.response.corrections:
            retry = {**answering, "attempt": answering["attempt"] + 1, "feedback": feedback}
            return {"answering": retry, "next_step": "answer", **usage_update(used)}
        return {**_item_failed(ctx, state, answering, checks.failure(verdicts)), **usage_update(used)}
    extras = {k: v for verdict in verdicts for k, v in verdict.extras.items()}
    answering = {**answering, "attempt": 0, "feedback": "",
                 "checks": [*answering["checks"], *[v.record() for v in verdicts]]}
    messages = list(answering["messages"])
    if response.get("action") == "call_tools" and response.get("calls"):
        messages.append(_tool_call_message(response["calls"], answering))
        return {"answering": {**answering, "messages": messages}, "next_step": "simulate_tools",
                **usage_update(used)}
    messages.append({"role": "assistant", "content": assistant_text(ctx.skill, response, extras)})
    answering = {**answering, "messages": messages}
    if ctx.skill.spec.response.mode == "follow_up" and answering["turn"] < ctx.skill.spec.response.turns:
        return {"answering": answering, "next_step": "follow_up", **usage_update(used)}
    return {**_item_done(ctx, state, answering), **usage_update(used)}


def assistant_text(skill: Skill, response: dict, extras: dict) -> str:
    template = skill.prompt("sample").assistant
    if response.get("action") in ("ask_user", "cannot_do") or set(response) == {"message"}:
        return response["message"]
    return render(template, **response, **extras)


def _tool_call_message(calls: list[dict], answering: Answering) -> dict:
    prefix = f"call_{answering['index']}_{len(answering['messages'])}"
    return {"role": "assistant", "content": "",
            "tool_calls": [{"id": f"{prefix}_{n}", "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]}}
                           for n, c in enumerate(calls)]}


def _item_done(ctx: RunContext, state: FlowState, answering: Answering) -> dict[str, Any]:
    samples = [*state.get("samples", []), flow_sample(ctx, state, answering)]
    if answering["index"] + 1 < len(items_to_answer(state)):
        return {"samples": samples, "answering": _start(ctx, state, answering["index"] + 1), "next_step": "answer"}
    return {"samples": samples, "next_step": "done"}


def _item_failed(ctx: RunContext, state: FlowState, answering: Answering, reason: str) -> dict[str, Any]:
    if answering["index"] == 0:      # the seed task itself could not be answered: the seed is rejected
        return {"rejected": reason, "rejected_by": "answer", "next_step": "done"}
    # the refined task failed; the seed task's sample stands
    return {"next_step": "done", "refined_rejected": reason}


FollowUp = create_model("FollowUp", message=(str, Field(min_length=5, max_length=600,
                                                       description="the user's next message")))


async def follow_up(state: FlowState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The user's next turn in a conversation: one of the skill's follow-up kinds, in turn order."""
    ctx = runtime.context
    answering = state["answering"]
    kinds = ctx.skill.spec.response.follow_ups
    kind = kinds[(answering["turn"] - 1 + _offset(state["seed_id"])) % len(kinds)]
    values: FollowUpInputs = {"conversation": transcript(answering["messages"]), "follow_up_kind": kind,
                              **_skill_values(ctx.skill)}
    try:
        out, used = await ask(ctx, "follow_up", values, FollowUp, state)
    except UnusableOutput as exc:  # the conversation ends here, with the turns it has
        return {**_item_done(ctx, state, answering), **usage_update(exc.usage)}
    messages = [*answering["messages"], {"role": "user", "content": out.message.strip()}]
    return {"answering": {**answering, "messages": messages, "turn": answering["turn"] + 1},
            "next_step": "answer", **usage_update(used)}


@functools.lru_cache(maxsize=64)
def _tool_results(calls: int) -> type[BaseModel]:
    return create_model("ToolResults", results=(list[str], Field(
        min_length=calls, max_length=calls, description=f"{calls} results, one JSON object per call, in order")))


async def simulate_tools(state: FlowState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Invented results for the calls just made (the paper's tool results are LLM-simulated)."""
    ctx = runtime.context
    answering = state["answering"]
    calls = answering["messages"][-1]["tool_calls"]
    schema = _tool_results(len(calls))
    listing = "\n".join(f"{n + 1}. {c['function']['name']}({c['function']['arguments']})" for n, c in enumerate(calls))
    item = items_to_answer(state)[answering["index"]]
    values: SimulateToolsInputs = {"calls": listing, "tools": sample_system(ctx, state, item),
                                   **_skill_values(ctx.skill)}
    try:
        out, used = await ask(ctx, "simulate_tools", values, schema, state)
    except UnusableOutput as exc:
        return {**_item_failed(ctx, state, answering, f"simulate_tools: {exc}"), **usage_update(exc.usage)}
    results = [{"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"], "content": r.strip()}
               for c, r in zip(calls, out.results)]
    return {"answering": {**answering, "messages": [*answering["messages"], *results]},
            "next_step": "answer", **usage_update(used)}


def flow_sample(ctx: RunContext, state: FlowState, answering: Answering) -> dict:
    item = items_to_answer(state)[answering["index"]]
    return make_sample(
        ctx, state, round=item["round"], refined=answering["index"] > 0,
        messages=[{"role": "system", "content": sample_system(ctx, state, item)}, *answering["messages"]],
        # the tools offered, so an export can give trainers a `tools` column (they are in the system turn too)
        tools=sample_tools(state, item),
        transformation={"agent": state.get("transformation"), "note": state.get("transform_note"),
                        **{key: state[field] for key, field in (("seed_support", "seed_support"),
                                                                ("fallback", "transform_fallback")) if field in state}},
        task={k: v for k, v in item.items() if k not in ("content", "round")}, checks=answering["checks"])


# ---- helpers ----

def _skill_values(skill: Skill) -> SkillValues:
    return {"skill_title": skill.title, "skill_description": skill.description}


def _transformation_values(state: FlowState, ctx: RunContext) -> dict[str, str]:
    name = state.get("transformation") or ""
    description = ctx.skill.transformation(name).description if name else ""
    return {"transformation": name, "transformation_description": description}


def _offset(seed_id: str) -> int:
    return int(hashlib.sha256(seed_id.encode()).hexdigest()[:6], 16)


@when({"gate": "every item answered, or the seed rejected", "answer": "next item, a correction or the next turn",
       "follow_up": "turns left in the conversation", "simulate_tools": "the answer called tools"})
async def after_answer(state: FlowState) -> str:  # async: see graphs/refinement.py
    step = state.get("next_step", "done")
    return "gate" if step == "done" else step


# ---- assembly ----

def build(skill: Skill) -> StateGraph:
    checks.checks_for(skill)   # refuses unknown check names now, not at each seed's answer
    builder = instruction_graph(FlowState, FlowInput, transform=transform,
                                generate=Agent(item_schema, generate_inputs, generate_apply),
                                suggest=Agent(suggest_schema, suggest_inputs, suggest_apply),
                                edit=Agent(edit_schema, edit_inputs, edit_apply), answer=answer)
    material = "transform"
    if skill.spec.transform.extend:
        builder.add_node("extend", agent_node("extend", lambda s, c: content_schema(c.skill), extend_inputs,
                                              extend_apply, on_unusable=keep_material))
        builder.add_conditional_edges("transform", unless_rejected("extend"), ["extend", END])
        material = "extend"
    builder.add_conditional_edges(material, unless_rejected("generate"), ["generate", END])
    after = ["answer", "gate"]
    mode = skill.spec.response.mode
    if mode == "follow_up":
        builder.add_node("follow_up", follow_up)
        builder.add_conditional_edges("follow_up", after_answer, ["answer", "gate"])
        after.append("follow_up")
    elif mode == "tool_calls":
        builder.add_node("simulate_tools", simulate_tools)
        builder.add_conditional_edges("simulate_tools", after_answer, ["answer", "gate"])
        after.append("simulate_tools")
    builder.add_conditional_edges("answer", after_answer, after)
    return builder
