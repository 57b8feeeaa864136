"""An in-process LangChain chat model driven by a script (no HTTP): for fast graph tests."""

from __future__ import annotations

from typing import Any, Callable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ScriptedChatModel(BaseChatModel):
    """Replies with script(system, last_user_message); records every call's kwargs."""

    script: Callable[[str, str], str]
    seen: list[dict] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
        user = str(messages[-1].content)
        self.seen.append({"system": system, "user": user, "kwargs": kwargs})
        content = self.script(system, user)
        message = AIMessage(content=content, response_metadata={"finish_reason": "stop"},
                            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
        return ChatResult(generations=[ChatGeneration(message=message)])
