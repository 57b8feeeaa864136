"""The openai SDK's HTTP client for a run: one per run, shared by all seeds. It carries the model
calls nodes/chat_call.py's Wire does not (behind a proxy, with LangChain callbacks or tracing, or
for requests the Wire cannot send).

The SDK's default httpx stack costs more CPU per request than a fast endpoint takes to answer; its
aiohttp transport (`openai[aiohttp]`) costs markedly less (bench/throughput.py prints both).
teachgraph uses aiohttp when it is installed and no proxy is configured (aiohttp ignores the
HTTP(S)_PROXY variables httpx honours), and the SDK's tuned httpx client otherwise.

Redirects are not followed (the SDK's clients follow them): a 301/302 would turn a model call's
POST into a GET, and a redirect may lead anywhere with the key; nodes/endpoint.py stops the run in
one line naming the new location instead."""

from __future__ import annotations

import openai

from teachgraph.client.chat_call import proxy_configured


def async_http_client() -> object:
    """An `httpx2.AsyncClient` (what `openai>=3` expects) for ChatOpenAI's `http_async_client`.

    Timeouts and retries stay with the SDK: ChatOpenAI passes its `timeout` with every request.
    The client opens its connections lazily, inside the running event loop; close it with
    `await client.aclose()` before that loop ends."""
    aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
    if aiohttp_client is not None and not proxy_configured():
        try:
            return aiohttp_client(follow_redirects=False)
        except RuntimeError:  # the SDK's stand-in when aiohttp is not installed
            pass
    return openai.DefaultAsyncHttpxClient(follow_redirects=False)


def transport_name(client: object) -> str:
    return "aiohttp" if "AioHttp" in type(client).__name__ else "httpx"

