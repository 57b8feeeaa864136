"""The LLM layer against a local fake OpenAI-compatible server: what goes on the wire, and how
truncated or invalid output is corrected and then rejected."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from nodes.llm import LLM, UnusableOutput, response_format
from tests.fake_openai import FakeOpenAI


class Pick(BaseModel):
    name: str = Field(min_length=3, max_length=400, description="a name")
    score: int = Field(ge=0, le=10)


def ask(fake, **llm_kwargs):
    async def main():
        chat = ChatOpenAI(base_url=fake.base_url, api_key="k", model="m", max_retries=0)
        llm = LLM(chat=chat, model_name="m", **llm_kwargs)
        try:
            return await llm.structured("system", "user", Pick), llm
        except UnusableOutput as exc:
            return exc, llm
    return asyncio.run(main())


def test_wire_schema_drops_length_bounds_that_break_llama_cpp_grammars():
    fmt = response_format("json_object", Pick)
    assert fmt["type"] == "json_object"
    name = fmt["schema"]["properties"]["name"]
    assert "maxLength" not in name and name["type"] == "string"   # 400: would be a 400-deep grammar
    assert name["minLength"] == 3                                  # small bounds stay: cheap and useful
    assert fmt["schema"]["properties"]["score"]["maximum"] == 10
    assert response_format("json_schema", Pick)["json_schema"]["name"] == "Pick"
    assert response_format("prompt", Pick) is None


def test_invalid_output_is_corrected_with_the_error():
    replies = iter(['{"name": "x", "score": 3}', '```json\n{"name": "alpha", "score": 3}\n```'])
    with FakeOpenAI(responder=lambda body: next(replies)) as fake:
        (value, usage), llm = ask(fake, structured_mode="json_object")
        assert value == Pick(name="alpha", score=3) and usage.calls == 2
        correction = fake.requests[1]["messages"][-1]["content"]
        assert "name" in correction and "at least 3 characters" in correction
        assert fake.requests[0]["response_format"]["type"] == "json_object"


def test_truncated_output_is_retried_then_rejected_not_failed():
    with FakeOpenAI(responder=lambda body: {"content": '{"name": "abc", "sc', "finish_reason": "length"}) as fake:
        exc, llm = ask(fake, structured_mode="json_schema", fix_attempts=2)
        assert isinstance(exc, UnusableOutput) and "truncated" in str(exc)
        assert exc.usage.calls == 3 == fake.request_count == llm.usage.calls


@pytest.mark.parametrize("param, key", [("max_tokens", "max_tokens"),
                                        ("max_completion_tokens", "max_completion_tokens")])
def test_reply_length_is_always_capped(param, key):
    with FakeOpenAI(responder=lambda body: json.dumps({"name": "abc", "score": 1})) as fake:
        ask(fake, structured_mode="prompt", token_param=param, max_tokens=77)
        assert fake.requests[0][key] == 77 and "response_format" not in fake.requests[0]


def test_callbacks_still_see_every_call():
    """Calls skip LangChain's callback machinery only when nothing is listening to it."""
    from langchain_core.callbacks import AsyncCallbackHandler

    class Count(AsyncCallbackHandler):
        starts = 0

        async def on_chat_model_start(self, *args, **kwargs):
            Count.starts += 1

    with FakeOpenAI(responder=lambda body: json.dumps({"name": "abc", "score": 1})) as fake:
        async def main():
            chat = ChatOpenAI(base_url=fake.base_url, api_key="k", model="m", max_retries=0, callbacks=[Count()])
            value, used = await LLM(chat=chat, model_name="m").structured("system", "user", Pick)
            return value, used
        value, used = asyncio.run(main())
    assert value == Pick(name="abc", score=1) and used.calls == 1 and Count.starts == 1


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "tools", "prompt"])
def test_the_direct_call_sends_and_reads_what_ainvoke_does(mode):
    """nodes/chat_call.py sends ChatOpenAI's own request body without LangChain's per-call
    machinery: the endpoint must see the same request, and the reply must read the same."""
    from langchain_core.callbacks import AsyncCallbackHandler

    reply = json.dumps({"name": "abc", "score": 1})
    with FakeOpenAI(responder=None if mode == "tools" else (lambda body: reply)) as fake:
        async def main(callbacks):
            chat = ChatOpenAI(base_url=fake.base_url, api_key="k", model="m", max_retries=0, callbacks=callbacks,
                              http_async_client=openai.DefaultAsyncHttpxClient())  # one per event loop
            return await LLM(chat=chat, model_name="m", structured_mode=mode).structured("system", "user", Pick)
        direct = asyncio.run(main(None))
        public = asyncio.run(main([AsyncCallbackHandler()]))     # a listener: the public ainvoke path
        assert direct[0] == public[0] and direct[1] == public[1]
        assert fake.requests[0] == fake.requests[1]
