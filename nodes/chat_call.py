"""One model call: the request body, built once (it is also the response cache's key), and the
cheapest way to send it.

For ChatOpenAI, langchain-openai builds the body (`_get_request_payload`) and turns the reply into
a message (`_create_chat_result`), as it does inside `ainvoke`. In between, the body goes out with
the openai SDK's low-level `post`, which skips what `ainvoke` adds per call: LangChain's callback
machinery, the SDK's type-driven transform of the params (they are plain JSON here, so it changes
nothing), a raw-response wrapper and a thread hop for the result. Profiled against a fast fake
endpoint that is ~1 ms of CPU per call less than `ChatOpenAI._agenerate` and ~2 ms less than
`ainvoke` (bench/throughput.py). Errors are the SDK's own (openai.APIStatusError and the rest), so
nodes/endpoint.py classifies them as before.

Whatever the shortcut cannot serve goes the public way: LangChain callbacks, a rate limiter or
LangSmith tracing to notify (`ainvoke`), the Responses API or a response_format given as a keyword
(`_agenerate`), and any other chat model class.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, message_to_dict
from langchain_core.outputs import ChatResult
from langsmith.utils import tracing_is_enabled
from openai.types.chat import ChatCompletion


class ChatRequest:
    def __init__(self, chat: BaseChatModel, messages: list[BaseMessage], kwargs: dict[str, Any]):
        self.chat, self.messages, self.kwargs = chat, messages, kwargs

    @cached_property
    def _openai(self) -> bool:
        return all(hasattr(self.chat, name) for name in ("_get_request_payload", "_create_chat_result",
                                                         "root_async_client"))

    @cached_property
    def payload(self) -> dict[str, Any] | None:
        return self.chat._get_request_payload(self.messages, **self.kwargs) if self._openai else None

    @cached_property
    def body(self) -> dict[str, Any] | None:
        """The JSON body as the endpoint receives it (the SDK merges extra_body into it)."""
        if self.payload is None:
            return None
        payload = self.payload
        return {**{k: v for k, v in payload.items() if k != "extra_body"}, **(payload.get("extra_body") or {})}

    def rendered(self) -> dict[str, Any]:
        """What the response cache's key is made of: the body and where it goes. Never the API key
        (it travels in a header)."""
        if self.body is not None:
            return {"endpoint": str(self.chat.root_async_client.base_url),
                    "query": getattr(self.chat, "default_query", None), "body": self.body}
        # any other LangChain chat model (the tests' in-process fakes): its parameters and the messages
        return {"endpoint": f"{type(self.chat).__module__}.{type(self.chat).__qualname__}",
                "params": getattr(self.chat, "_identifying_params", {}), "kwargs": self.kwargs,
                "body": {"messages": [message_to_dict(m) for m in self.messages]}}

    def _listened(self) -> bool:
        return bool(self.chat.callbacks or getattr(self.chat, "rate_limiter", None) or tracing_is_enabled())

    def _direct(self) -> bool:
        if not self._openai or "response_format" in self.payload:
            return False
        responses_api = getattr(self.chat, "_use_responses_api", None)
        return not (responses_api and responses_api(self.payload))

    async def send(self) -> AIMessage:
        """One attempt (nodes/endpoint.py retries)."""
        if self._listened():
            return await self.chat.ainvoke(self.messages, **self.kwargs)
        if self._direct():
            response = await self.chat.root_async_client.post("/chat/completions", body=self.body,
                                                              cast_to=ChatCompletion)
            result = self.chat._create_chat_result(response)
        else:
            result = await self.chat._agenerate(self.messages, **self.kwargs)
        return _message(result)


def _message(result: ChatResult) -> AIMessage:
    generation = result.generations[0]
    reply = generation.message
    # as ainvoke does: finish_reason and the like travel in generation_info
    reply.response_metadata = {**(generation.generation_info or {}), **reply.response_metadata}
    return reply
