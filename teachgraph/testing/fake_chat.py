"""An in-process LangChain chat model driven by a script (no HTTP): for fast graph tests."""

from __future__ import annotations

from typing import Any, Callable, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ScriptedChatModel(BaseChatModel):
    """Replies with script(system, user); records every call's kwargs. `user` is the last user turn (a
    correction's is the validation error), or with turn="first" the agent's request, which names the
    agent when several agents share one system prompt (the rag skill's)."""

    script: Callable[[str, str], str]
    turn: Literal["last", "first"] = "last"
    seen: list[dict] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
        first = next((m for m in messages if isinstance(m, HumanMessage)), messages[-1])
        user = str((first if self.turn == "first" else messages[-1]).content)
        self.seen.append({"system": system, "user": user, "kwargs": kwargs})
        content = self.script(system, user)
        message = AIMessage(content=content, response_metadata={"finish_reason": "stop"},
                            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
        return ChatResult(generations=[ChatGeneration(message=message)])
