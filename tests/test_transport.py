"""The HTTP client under every model call: aiohttp when it can be used, the SDK's httpx client
when a proxy is configured (aiohttp would ignore it), and either one really carries calls."""

from __future__ import annotations

import asyncio

import pytest

from teachgraph.runner import Settings, make_llm
from teachgraph.client.transport import async_http_client, transport_name
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.test_llm import Pick


def settings(fake) -> Settings:
    return Settings(skill="rag", seeds=[], out="-", base_url=fake.base_url, model="fake-model",
                    structured="json_schema", concurrency=4)


@pytest.mark.parametrize("proxy, expected", [(None, "aiohttp"), ("http://127.0.0.1:9", "httpx")])
def test_the_run_client_is_aiohttp_unless_a_proxy_is_set(no_proxy, monkeypatch, proxy, expected):
    pytest.importorskip("aiohttp")
    if proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
    with FakeOpenAI() as fake:
        llm = make_llm(settings(fake), fake.base_url, "k", embedded=False)
        assert llm.chat.http_async_client is not None
        assert transport_name(llm.chat.http_async_client) == expected
        asyncio.run(llm.aclose())


@pytest.mark.parametrize("proxy", [None, "http://127.0.0.1:9"])
def test_calls_go_out_on_the_shared_client_and_it_closes(no_proxy, monkeypatch, proxy):
    if proxy:  # the fake endpoint is on loopback: keep it out of the proxy
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeOpenAI(responder=lambda body: '{"name": "alpha", "score": 3}') as fake:
        llm = make_llm(settings(fake), fake.base_url, "k", embedded=False)
        client = llm.chat.http_async_client

        async def main():
            try:
                return await asyncio.gather(*[llm.structured("system", f"user {i}", Pick) for i in range(6)])
            finally:
                await llm.aclose()
        results = asyncio.run(main())
        # without a proxy the calls go out on nodes/chat_call.py's Wire; with one, on the SDK's httpx client
        assert (llm.wire is None) == bool(proxy)
        assert [value for value, _ in results] == [Pick(name="alpha", score=3)] * 6
        assert fake.request_count == 6 and llm.usage.calls == 6
        assert all(body["response_format"]["type"] == "json_schema" for body in fake.requests)
        assert client.is_closed


def test_fallback_client_when_the_sdk_has_no_aiohttp_client(monkeypatch):
    import openai
    monkeypatch.delattr(openai, "DefaultAioHttpClient")
    assert transport_name(async_http_client()) == "httpx"
