"""The suggester -> editor loop every skill shares (AgentInstruct's instruction refinement).

    <entry> --(max_rounds == 0)--> <exit>
    <entry> --> suggest --(nothing to improve, or unusable output)--> <exit>
                suggest --> edit --(round < max_rounds)--> suggest
                            edit --(round == max_rounds, or unusable output)--> <exit>
A seed rejected by <entry> goes to END. The suggester and editor never reject: when their output
is unusable they end refinement (nodes.agent.stop_refining) and the item from the last good round
goes on. The round counter lives in state, so the loop is bounded no matter what the model says,
and a resumed seed continues its round.
"""

from __future__ import annotations

from langgraph.graph import END, StateGraph


# Routers are async only so that LangGraph runs them on the event loop: a plain function in an
# async graph goes to a worker thread and back on every step (measured: that hop is most of a
# step's wall time on a busy machine). Every graph's routers follow this rule.

def when(conditions: dict[str, str]):
    """Label a router's targets with the condition, in words, that sends a seed there: `graph show`
    and the review page draw them on the edges (teachgraph/review/diagram.py reads `.conditions`)."""
    def label(route):
        route.conditions = conditions
        return route
    return label


def unless_rejected(then: str):
    """A router: END for a seed its node rejected, else `then`."""
    @when({END: "rejected", then: "not rejected"})
    async def route(state: dict) -> str:
        return END if state.get("rejected") else then
    return route


def add_refinement_loop(builder: StateGraph, *, entry: str, exit: str,
                        suggester: str = "suggest", editor: str = "edit") -> None:
    @when({END: "rejected", suggester: "max_rounds > 0", exit: "max_rounds == 0"})
    async def after_entry(state: dict) -> str:
        if state.get("rejected"):
            return END
        return suggester if state.get("max_rounds", 0) > 0 else exit

    @when({editor: "suggester has an edit", exit: "suggester: nothing to improve (or unusable output)"})
    async def after_suggest(state: dict) -> str:
        return exit if state.get("refine_done") else editor

    @when({suggester: "round < max_rounds", exit: "round == max_rounds (or unusable output)"})
    async def after_edit(state: dict) -> str:
        if state.get("refine_done"):
            return exit
        return suggester if state.get("round", 0) < state.get("max_rounds", 0) else exit

    builder.add_conditional_edges(entry, after_entry, [suggester, exit, END])
    builder.add_conditional_edges(suggester, after_suggest, [editor, exit])
    builder.add_conditional_edges(editor, after_edit, [suggester, exit])
