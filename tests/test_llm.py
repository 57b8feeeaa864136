"""The LLM layer against a local fake OpenAI-compatible server: what goes on the wire, and how
truncated or invalid output is corrected and then rejected."""

from __future__ import annotations

import asyncio
import gzip
import json

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from teachgraph.client.llm import LLM, UnusableOutput, response_format
from teachgraph.testing.fake_openai import FakeOpenAI


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


def _three_ways(fake, mode: str, **chat_kwargs):
    """The same structured call over the Wire, the SDK's post and the public ainvoke."""
    from langchain_core.callbacks import AsyncCallbackHandler
    from teachgraph.client.chat_call import Wire

    async def main(way):
        chat = ChatOpenAI(base_url=fake.base_url, api_key="sk-test-key-1234", model="m", max_retries=0,
                          callbacks=[AsyncCallbackHandler()] if way == "public" else None,
                          http_async_client=openai.DefaultAsyncHttpxClient(), **chat_kwargs)
        wire = Wire.for_chat(chat, own_client=True) if way == "wire" else None
        assert (wire is not None) == (way == "wire")
        llm = LLM(chat=chat, model_name="m", structured_mode=mode, wire=wire)
        try:
            return await llm.structured("system", "user", Pick)
        finally:
            await llm.aclose()
    return {way: asyncio.run(main(way)) for way in ("wire", "sdk", "public")}


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "prompt"])
def test_the_wire_sends_what_the_sdk_sends(no_proxy, mode):
    """nodes/chat_call.py's Wire posts the body itself: the endpoint must see the same request
    (path, query, body, key, custom headers) and the reply must read the same."""
    reply = json.dumps({"name": "abc", "score": 1})
    with FakeOpenAI(responder=lambda body: reply) as fake:
        results = _three_ways(fake, mode, default_headers={"X-Team": "data"}, default_query={"api-version": "7"})
        assert results["wire"] == results["sdk"] == results["public"]
        assert fake.requests[0] == fake.requests[1] == fake.requests[2]
        for path, headers in fake.request_lines:
            assert path == "/v1/chat/completions?api-version=7"
            assert headers["authorization"] == "Bearer sk-test-key-1234" and headers["x-team"] == "data"
            assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("reply, error", [
    ({"status": 429, "headers": {"Retry-After": "7"}, "content": "slow down"}, openai.RateLimitError),
    ({"status": 500, "content": "boom"}, openai.InternalServerError),
    ({"status": 401, "content": "bad key"}, openai.AuthenticationError),
    ({"status": 400, "content": "maximum context length exceeded"}, openai.BadRequestError),
    # compressed: aiohttp decodes it, and the error must not be decoded a second time
    ({"status": 429, "headers": {"Retry-After": "3", "Content-Encoding": "gzip"},
      "body": gzip.compress(b'{"error": {"message": "slow down", "type": "rate_limit"}}')}, openai.RateLimitError),
])
def test_the_wire_raises_the_sdks_errors(no_proxy, reply, error):
    """Retries and their classification (nodes/endpoint.py) read the SDK's exceptions: the Wire must
    raise the same types with the same status, body and headers."""
    from teachgraph.client.chat_call import Wire

    with FakeOpenAI(responder=lambda body: reply) as fake:
        async def main():
            chat = ChatOpenAI(base_url=fake.base_url, api_key="k", model="m", max_retries=0)
            wire = Wire.for_chat(chat)
            raised = []
            for send in (lambda: wire.post({"model": "m", "messages": []}),
                         lambda: chat.root_async_client.post("/chat/completions", body={"model": "m", "messages": []},
                                                             cast_to=object)):
                with pytest.raises(error) as caught:
                    await send()
                raised.append(caught.value)
            await wire.aclose()
            return raised
        by_wire, by_sdk = asyncio.run(main())
    assert type(by_wire) is type(by_sdk) and by_wire.status_code == by_sdk.status_code == reply["status"]
    assert by_wire.body == by_sdk.body and by_wire.message == by_sdk.message
    assert by_wire.response.headers.get("retry-after") == by_sdk.response.headers.get("retry-after")


def _wire_post_raises(base_url: str, error: type[Exception]) -> None:
    from teachgraph.client.chat_call import Wire

    async def main():
        wire = Wire.for_chat(ChatOpenAI(base_url=base_url, api_key="k", model="m", max_retries=0))
        try:
            with pytest.raises(error):
                await wire.post({"model": "m", "messages": []})
        finally:
            await wire.aclose()
    asyncio.run(main())


def test_the_wire_reports_a_refused_connection_and_garbled_bodies_as_the_endpoint_layer_expects(no_proxy):
    _wire_post_raises("http://127.0.0.1:9/v1", openai.APIConnectionError)
    for garbage in (b"<html>502</html>", b'{"id": "\xff\xfe"}'):   # not JSON; not UTF-8
        with FakeOpenAI(responder=lambda body: {"status": 200, "body": garbage}) as fake:
            _wire_post_raises(fake.base_url, json.JSONDecodeError)


def test_the_wire_lets_the_users_headers_win_as_the_sdk_does(no_proxy):
    """An Authorization header of the user's (a gateway token; any case) replaces the key's."""
    with FakeOpenAI(responder=lambda body: json.dumps({"name": "abc", "score": 1})) as fake:
        _three_ways(fake, "json_schema", default_headers={"authorization": "Bearer gateway"})
        assert [headers["authorization"] for _, headers in fake.request_lines] == ["Bearer gateway"] * 3


@pytest.mark.parametrize("case", ["proxy", "subclass", "custom-auth", "key-provider", "users-client"])
def test_no_wire_where_it_could_send_differently(no_proxy, monkeypatch, case):
    from langchain_openai import AzureChatOpenAI
    from teachgraph.client.chat_call import Wire

    if case == "proxy":
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        chat = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", model="m")
    elif case == "subclass":   # Azure's token providers and URL rules stay with the SDK
        chat = AzureChatOpenAI(azure_endpoint="http://127.0.0.1:9", api_key="k", api_version="2024-10-21",
                               azure_deployment="d")
    elif case == "custom-auth":
        chat = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", model="m")
        monkeypatch.setattr(type(chat.root_async_client), "custom_auth", property(lambda self: object()))
    elif case == "key-provider":   # a key fetched per request: the SDK asks for it, the Wire could not
        async def key() -> str:
            return "k"
        chat = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key=key, model="m")
    else:                          # its TLS settings, mounts or hooks would be bypassed
        chat = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", model="m",
                          http_async_client=openai.DefaultAsyncHttpxClient(verify=False))
    assert Wire.for_chat(chat) is None
    # the control: a plain ChatOpenAI gets one (not under a proxy, nor with custom_auth patched on its class)
    plain = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", model="m")
    assert (Wire.for_chat(plain) is None) == (case in ("proxy", "custom-auth"))
