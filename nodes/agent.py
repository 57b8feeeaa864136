"""The one agent node type: render the skill's prompt for `agent`, ask the model for a pydantic
schema, turn the reply into a state update. Transformation, generation, suggester, editor and
answer agents are all this, with different prompts, schemas and update functions."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Callable, TypedDict

from langgraph.runtime import Runtime
from pydantic import BaseModel

from teachgraph.nodes.context import RunContext
from teachgraph.client.llm import UnusableOutput, Usage
from teachgraph.nodes.sample import Refinement


class NodeFailed(RuntimeError):
    """A node could not finish for a reason outside the model's output (endpoint down, bug).
    The seed is recorded as failed with the node and error; resume runs the node again.
    `usage` holds the calls the node made before it failed, so the seed's figures stay right."""

    def __init__(self, node: str, error: BaseException, usage: Usage | None = None):
        self.node = node
        self.error = error
        self.usage = usage if usage is not None else Usage()
        super().__init__(f"{node}: {type(error).__name__}: {error}")


class SeedInput(TypedDict):
    """What the runner starts a seed's graph with (the graphs' input state)."""

    seed_id: str
    task_type: str
    max_rounds: int
    round: int
    llm_calls: Annotated[int, operator.add]
    tokens: Annotated[int, operator.add]


class SeedState(SeedInput, total=False):
    """Keys every skill's state has. Keep state small: it is checkpointed after every step."""

    refine_done: bool
    rejected: str                                    # set => the seed ends rejected, with this reason
    rejected_by: str                                 # the node that rejected it
    refined_rejected: str                            # why the refined task got no sample (the seed's stands)
    samples: list[dict]                              # finished (prompt, response) samples
    dropped: list[dict]                              # samples a gate dropped, with gate, reason, duplicate_of
    cache_hits: Annotated[int, operator.add]         # replies the response cache served
    input_tokens: Annotated[int, operator.add]       # of tokens: the prompts' (prices differ) ...
    output_tokens: Annotated[int, operator.add]      # ... and the replies'


def usage_update(used: Usage) -> dict[str, int]:
    return {"llm_calls": used.calls, "tokens": used.tokens, "cache_hits": used.cache_hits,
            "input_tokens": used.input_tokens, "output_tokens": used.output_tokens}


def given(inputs: type) -> dict[str, frozenset[str]]:
    """The $names an agent's system and user templates may use: the keys of its inputs TypedDict
    (a graph's `prompt_inputs`, which skills.check_placeholders reads when a skill loads)."""
    keys = frozenset(inputs.__required_keys__ | inputs.__optional_keys__)
    return {"system": keys, "user": keys}


Inputs = Callable[[dict, RunContext], dict[str, Any]]
Apply = Callable[[dict, Any, RunContext], dict[str, Any]]
Check = Callable[[dict, Any], None]


async def ask(ctx: RunContext, agent: str, values: dict[str, Any], schema: type[BaseModel],
              state: dict, check: Check | None = None,
              max_tokens: int | None = None) -> tuple[Any, Usage]:
    """One structured call for `agent`; endpoint errors become NodeFailed(agent)."""
    prompt = ctx.skill.prompt(agent)
    system, user = prompt.render(**values)
    used = Usage()
    try:
        return await ctx.llm.structured(
            system, user, schema,
            max_tokens=max_tokens or min(filter(None, (prompt.max_tokens, ctx.llm.max_tokens))),
            check=(lambda value: check(state, value)) if check else None, used=used)
    except UnusableOutput:
        raise
    except Exception as exc:  # endpoint, network, or our bug: the seed fails at this node
        raise NodeFailed(agent, exc, used) from exc


def reject(agent: str, state: dict, exc: UnusableOutput, ctx: RunContext) -> dict[str, Any]:
    return {"rejected": str(exc), "rejected_by": agent}


def stop_refining(agent: str, state: dict, exc: UnusableOutput, ctx: RunContext) -> dict[str, Any]:
    """A refinement agent that cannot produce usable output ends refinement; the item as it
    stood after the last good round is kept, and the history says why refinement stopped. An
    editor that failed was applying this round's operation; a suggester that failed chose none
    (state's operation is then the last round's, so it is not recorded)."""
    entry = Refinement(round=state.get("round", 0) + 1, operation=state.get("operation") if agent == "edit" else None,
                       note=f"refinement stopped, {agent} output unusable: {exc}")
    return {"refine_done": True, "history": [*state.get("history", []), entry.record()]}


def agent_node(agent: str, schema: type[BaseModel] | Callable[[dict, RunContext], type[BaseModel]],
               inputs: Inputs, apply: Apply, *, check: Check | None = None,
               on_unusable: Callable[[str, dict, UnusableOutput, RunContext], dict] = reject,
               max_tokens: int | None = None):
    async def node(state: dict, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context
        chosen = schema if isinstance(schema, type) else schema(state, ctx)
        try:
            result, used = await ask(ctx, agent, inputs(state, ctx), chosen, state, check,
                                     max_tokens=max_tokens)
        except UnusableOutput as exc:
            return {**on_unusable(agent, state, exc, ctx), **usage_update(exc.usage)}
        return {**apply(state, result, ctx), **usage_update(used)}

    node.__name__ = agent
    return node
