"""The RAG skill graph.

transform -> generate -> [suggest <-> edit]* -> answer

- transform (content transformation): the agent titles the seed chunk and writes a search query;
  the seed's own passages plus distractors retrieved from other seeds (SQLite FTS) become the context.
- generate (seed instruction generation): a query of the seed's task type from taxonomy.toml.
- suggest/edit (refinement): make the item harder; passage edits are applied here, in code.
- answer: answers the seed item and the refined item, citing passage ids; each becomes a sample.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from typing import Any, Literal, TypedDict

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, create_model

from teachgraph.graphs.skeleton import Agent, instruction_graph
from teachgraph.nodes import checks
from teachgraph.nodes.agent import NodeFailed, SeedInput, SeedState, agent_node, ask, given, usage_update
from teachgraph.nodes.context import RunContext
from teachgraph.nodes.gates import check_gates  # noqa: F401  (skills.check_gates' hook for this graph)
from teachgraph.client.llm import UnusableOutput, Usage
from teachgraph.nodes.sample import Refinement, make_sample
from teachgraph.skills import Skill
from teachgraph.skills.spec import SkillSpec

# ---- agent reply schemas (flat: grammar-constrained decoding handles flat schemas best) ----

class Transformed(BaseModel):
    title: str = Field(min_length=3, max_length=150, description="short specific title of the document")
    search_query: str = Field(max_length=200, description="2-6 keywords to find related documents")


class Query(BaseModel):
    query: str = Field(min_length=10, max_length=400, description="the user's query")


class QueryWithConflict(Query):
    new_passage: str = Field(min_length=20, max_length=800,
                             description="a short passage contradicting a fact the query asks about")


class Suggestion(BaseModel):
    operation: Literal["rewrite_query", "add_near_miss", "drop_key_passages",
                       "add_conflicting_passage", "none"] = Field(description="one operation, or none")
    suggestion: str = Field(max_length=600, description="what to change and why, in one or two sentences")


class Edited(BaseModel):
    query: str = Field(min_length=10, max_length=400, description="the new query")
    new_passage: str = Field(default="", max_length=800,
                             description="only for add_conflicting_passage: the contradicting passage")


class EditedWithConflict(Edited):
    new_passage: str = Field(min_length=20, max_length=800,
                             description="a short passage (2-3 sentences) contradicting a fact the query asks about")


class Answer(BaseModel):
    answer: str = Field(min_length=1, max_length=2000, description="the answer, from the passages only")
    relevant_passages: list[int] = Field(description="Document Ids of the passages used")


# ---- state ----

class RagState(SeedState, total=False):
    title: str
    transform_note: str
    search_query: str
    pool: list[dict]          # every passage ever in this item's context: {pid, kind, seed_id, title, text}
    item: dict                # current item: {query, pids, round}
    original: dict            # the seed instruction before refinement
    operation: str
    suggestion: str
    history: list[dict]       # one nodes.sample.Refinement record per round


# ---- what each agent's prompt is given (skills.check_placeholders refuses any other $name) ----

class TransformInputs(TypedDict):
    source: str
    text: str


# generate, suggest, edit and answer share one system prompt and open their user turn with the item's
# passages (skills/rag/prompts.toml): a seed's calls then share their prefix up to the end of the
# passages, which the embedded server's prompt cache evaluates once per seed, not once per call.

class GenerateInputs(TypedDict):
    task_type: str
    task_description: str
    task_guidance: str
    passages: str


class SuggestInputs(TypedDict):
    query: str
    passages: str
    history: str


class EditInputs(SuggestInputs):
    operation: str
    suggestion: str


class AnswerInputs(TypedDict):
    passages: str
    query: str


class SampleInputs(TypedDict):
    query: str
    passages: str


def prompt_inputs(spec: SkillSpec) -> dict[str, dict[str, frozenset[str]]]:
    """The $names each agent's templates may use, by agent and part (system, user, assistant)."""
    return {"transform": given(TransformInputs), "generate": given(GenerateInputs), "suggest": given(SuggestInputs),
            "edit": given(EditInputs), "answer": given(AnswerInputs),
            "sample": {"system": frozenset(), "user": given(SampleInputs)["user"]}}


# ---- rendering ----

def render_passages(state: RagState, pids: list[int]) -> str:
    """The context block, as the sample's user turn shows it."""
    by_id = {p["pid"]: p for p in state["pool"]}
    return "\n\n".join(
        f"Document Id: {pid}\nTitle: {by_id[pid]['title']}\nSnippet: {by_id[pid]['text']}" for pid in pids)


def agent_passages(state: RagState, pids: list[int]) -> str:
    """The context block the agents see: in id order, where the sample has the item's (shuffled) order.
    A passage an edit adds gets the next id, so it comes last and the seed's earlier calls' prefix
    still holds for the server's prompt cache; the ids the answer cites are the same."""
    return render_passages(state, sorted(pids))


def _rng(state: RagState, salt: str) -> random.Random:
    return random.Random(hashlib.sha256(f"{state['seed_id']}:{salt}".encode()).hexdigest())


def _pool_entry(pid: int, kind: str, passage: dict) -> dict:
    return {"pid": pid, "kind": kind, "seed_id": passage.get("seed_id"),
            "title": passage["title"], "text": passage["text"]}


def _add_passages(state: RagState, new: list[dict], kind: str) -> tuple[list[dict], list[int]]:
    pool = list(state.get("pool", []))
    first = max((p["pid"] for p in pool), default=0) + 1
    added = list(range(first, first + len(new)))
    pool += [_pool_entry(pid, kind, passage) for pid, passage in zip(added, new)]
    return pool, added


# ---- nodes ----

def transform_inputs(state: RagState, ctx: RunContext) -> TransformInputs:
    seed = ctx.corpus.seed(state["seed_id"])
    return {"source": seed["source"], "text": seed["text"]}


def transform_fallback(agent: str, state: RagState, exc: UnusableOutput, ctx: RunContext) -> dict[str, Any]:
    """No usable title/query from the model: the document's own title and words still make a context."""
    seed = ctx.corpus.seed(state["seed_id"])
    # model_construct: the document's own title need not meet the bounds set for the model's reply
    fallback = Transformed.model_construct(title=seed["title"][:150] or "Untitled", search_query="")
    update = transform_apply(state, fallback, ctx)
    return {**update, "transform_note": f"model output unusable ({exc}); used the document title"}


def transform_apply(state: RagState, out: Transformed, ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.skill.spec.context
    wanted = cfg.distractors
    seed = ctx.corpus.seed(state["seed_id"])
    own = [{"seed_id": seed["id"], "title": out.title.strip(), "text": text}
           for text in seed["passages"][: cfg.own_passages_max]]
    query = out.search_query.strip() or seed["text"]
    distractors = ctx.corpus.search(query, exclude_seed=seed["id"], limit=wanted)
    if len(distractors) < wanted:  # a vague query: fall back to the seed's own words
        distractors += ctx.corpus.search(seed["text"], exclude_seed=seed["id"], limit=wanted - len(distractors),
                                         exclude_texts={d["text"] for d in distractors})
    entries = [("own", p) for p in own] + [("distractor", d) for d in distractors]
    _rng(state, "order").shuffle(entries)  # own passages must not always come first
    pool = [_pool_entry(pid, kind, passage) for pid, (kind, passage) in enumerate(entries, start=1)]
    return {"title": out.title.strip(), "search_query": out.search_query.strip(), "pool": pool}


def generate_schema(state: RagState, ctx: RunContext) -> type[BaseModel]:
    task = ctx.skill.task_type(state["task_type"])
    return QueryWithConflict if task.context_op == "add_conflicting_passage" else Query


def generate_inputs(state: RagState, ctx: RunContext) -> GenerateInputs:
    task = ctx.skill.task_type(state["task_type"])
    return {"task_type": task.name, "task_description": task.description, "task_guidance": task.guidance,
            "passages": agent_passages(state, [p["pid"] for p in state["pool"]])}


def apply_operation(state: RagState, item: dict, operation: str, query: str, new_passage: str,
                    ctx: RunContext) -> tuple[dict, list[dict], str]:
    """Apply an editing operation to an item; returns (new item, new pool, note)."""
    pool, pids, note = state["pool"], list(item["pids"]), ""
    if operation == "drop_key_passages":
        own = {p["pid"] for p in pool if p["kind"] == "own"}
        pids = [pid for pid in pids if pid not in own]
        note = f"removed passages {sorted(own & set(item['pids']))}"
    elif operation == "add_near_miss":
        present = {p["text"] for p in pool}
        found = ctx.corpus.search(query, exclude_seed=state["seed_id"], limit=2, exclude_texts=present)
        pool, added = _add_passages(state, found, "near_miss")
        pids += added
        note = f"added near-miss passages {added}" if added else "no near-miss passage found"
    elif operation == "add_conflicting_passage" and new_passage.strip():
        pool, added = _add_passages(state, [{"title": state["title"], "text": new_passage.strip(),
                                             "seed_id": None}], "conflict")
        pids += added
        _rng(state, f"conflict{item['round']}").shuffle(pids)
        note = f"added conflicting passage {added}"
    return {"query": query.strip(), "pids": pids, "round": item["round"]}, pool, note


def generate_apply(state: RagState, out: Query, ctx: RunContext) -> dict[str, Any]:
    task = ctx.skill.task_type(state["task_type"])
    item = {"query": out.query.strip(), "pids": [p["pid"] for p in state["pool"]], "round": 0}
    update: dict[str, Any] = {}
    if task.context_op:
        item, pool, note = apply_operation(state, item, task.context_op, out.query,
                                           getattr(out, "new_passage", ""), ctx)
        update = {"pool": pool}
        item["note"] = note
    return {**update, "item": item, "original": item, "round": 0, "history": []}


def suggest_inputs(state: RagState, ctx: RunContext) -> SuggestInputs:
    history = [f"round {h['round']}: {h['operation']}" for h in state.get("history", [])] or ["none yet"]
    return {"query": state["item"]["query"], "passages": agent_passages(state, state["item"]["pids"]),
            "history": "; ".join(history)}


def suggest_apply(state: RagState, out: Suggestion, ctx: RunContext) -> dict[str, Any]:
    if out.operation == "none":
        return {"refine_done": True, "operation": "none", "suggestion": out.suggestion.strip()}
    return {"operation": out.operation, "suggestion": out.suggestion.strip()}


def edit_inputs(state: RagState, ctx: RunContext) -> EditInputs:
    return {**suggest_inputs(state, ctx), "operation": state["operation"], "suggestion": state["suggestion"]}


def edit_schema(state: RagState, ctx: RunContext) -> type[BaseModel]:
    return EditedWithConflict if state.get("operation") == "add_conflicting_passage" else Edited


def edit_apply(state: RagState, out: Edited, ctx: RunContext) -> dict[str, Any]:
    current = {**state["item"], "round": state["item"]["round"] + 1}
    item, pool, note = apply_operation(state, current, state["operation"], out.query, out.new_passage, ctx)
    entry = Refinement(round=item["round"], operation=state["operation"], suggestion=state["suggestion"],
                       query=item["query"], note=note)
    return {"item": item, "pool": pool, "round": item["round"],
            "history": [*state.get("history", []), entry.record()]}


def answer_schema(item: dict) -> type[Answer]:
    """Answer, with relevant_passages limited to this item's ids: a grammar-constrained endpoint
    then cannot cite a passage that is not in the context, and pydantic checks it everywhere."""
    return _answer_schema(tuple(sorted(item["pids"])))


@functools.lru_cache(maxsize=256)  # one class per id set: building a model costs ~1 ms (profiled)
def _answer_schema(ids: tuple[int, ...]) -> type[Answer]:
    if not ids:  # every passage was removed: the only right citation list is []
        return create_model("Answer", __base__=Answer, relevant_passages=(
            list[int], Field(max_length=0, description="always [] (there are no passages)")))
    return create_model("Answer", __base__=Answer, relevant_passages=(
        list[Literal[ids]], Field(description=f"Document Ids of the passages used, from {list(ids)}")))


def _answer_check(state: RagState, out: Answer) -> None:
    if not out.answer.strip():
        raise ValueError("answer is empty")


async def answer(state: RagState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Answer the seed item and, if refinement changed it, the refined item (its child)."""
    ctx = runtime.context
    items = [state["original"]]
    final = state["item"]
    if (final["query"], final["pids"]) != (state["original"]["query"], state["original"]["pids"]):
        items.append(final)
    used = Usage()
    samples = []
    refined_rejected: dict[str, str] = {}
    for item in items:
        user = sample_prompt(ctx.skill, state, item)
        try:
            # the sample's passages and query, passages first: the sample's fixed text puts the query
            # first, which would make the server evaluate the passages again for every answer
            inputs: AnswerInputs = {"passages": agent_passages(state, item["pids"]), "query": item["query"]}
            out, call = await ask(ctx, "answer", inputs, answer_schema(item), state, _answer_check)
        except UnusableOutput as exc:
            used.add(exc.usage)
            if samples:  # the refined item failed; the seed item's sample still stands
                refined_rejected["refined_rejected"] = str(exc)
                break
            return {"rejected": str(exc), "rejected_by": "answer", **usage_update(used)}
        except NodeFailed as exc:  # the calls for the items before it were spent too
            exc.usage.add(used)
            raise
        used.add(call)
        # rag's one check is the LLM judge (--judge-model); the answer's shape is checked by its schema
        verdicts = await checks.check_answer(ctx, {"sample": user}, out.model_dump(), used)
        if checks.failure(verdicts):
            if samples:
                refined_rejected["refined_rejected"] = checks.failure(verdicts)
                break
            return {"rejected": checks.failure(verdicts), "rejected_by": "answer", **usage_update(used)}
        judged = {"checks": [v.record() for v in verdicts]} if verdicts else {}
        samples.append(rag_sample(ctx, state, item, user, out, refined=bool(samples), **judged))
    return {"samples": samples, **refined_rejected, **usage_update(used)}


def sample_prompt(skill: Skill, state: RagState, item: dict) -> str:
    values: SampleInputs = {"query": item["query"], "passages": render_passages(state, item["pids"])}
    _, user = skill.prompt("sample").render(**values)
    return user


def rag_sample(ctx: RunContext, state: RagState, item: dict, user: str, out: Answer, refined: bool,
               **judged: Any) -> dict:
    response = json.dumps({"answer": out.answer.strip(), "relevant_passages": sorted(set(out.relevant_passages))},
                          ensure_ascii=False)
    system, _ = ctx.skill.prompt("sample").render()
    return make_sample(
        ctx, state, round=item["round"], refined=refined,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user},
                  {"role": "assistant", "content": response}],
        transformation={"agent": "transform", "title": state["title"], "note": state.get("transform_note"),
                        "search_query": state["search_query"],
                        "passages": [{k: p[k] for k in ("pid", "kind", "seed_id")} for p in state["pool"]]},
        original_query=state["original"]["query"], **judged)


# ---- assembly ----

def build(skill: Skill) -> StateGraph:
    builder = instruction_graph(
        RagState, SeedInput,
        transform=agent_node("transform", Transformed, transform_inputs, transform_apply,
                             on_unusable=transform_fallback),
        generate=Agent(generate_schema, generate_inputs, generate_apply),
        suggest=Agent(Suggestion, suggest_inputs, suggest_apply),
        edit=Agent(edit_schema, edit_inputs, edit_apply), answer=answer)
    builder.add_edge("transform", "generate")  # transform never rejects: it falls back to the document title
    builder.add_edge("answer", "gate")
    return builder
