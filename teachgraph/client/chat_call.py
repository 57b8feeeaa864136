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

For a plain ChatOpenAI (an API key, no proxy, no custom auth or HTTP client of the caller's) a
`Wire` goes one step further: the body goes out on one aiohttp session of its own and the JSON reply
goes to `_create_chat_result` as a dict. The SDK's request machinery (building an httpx request,
headers, URL, auth hooks, its aiohttp adapter, reading the reply into a ChatCompletion that
langchain-openai then dumps back to a dict) was half of teachgraph's CPU per call against a fast
endpoint (py-spy). HTTP errors are still made by the SDK (`_make_status_error_from_response`),
so nodes/endpoint.py sees the same exception types, bodies and Retry-After headers.

Whatever the shortcuts cannot serve goes the public way: LangChain callbacks, a rate limiter or
LangSmith tracing to notify (`ainvoke`), the Responses API or a response_format given as a keyword
(`_agenerate`), and any other chat model class.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from functools import cached_property
from typing import Any

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, message_to_dict
from langchain_core.outputs import ChatResult
from langsmith.utils import tracing_is_enabled
from openai.types.chat import ChatCompletion

from teachgraph.client.endpoint import BrokenReply


class Wire:
    """Chat completions POSTed straight over one aiohttp session: for one plain ChatOpenAI, see
    `Wire.for_chat`. Deadlines are nodes/endpoint.py's (every attempt runs under its timeout)."""

    def __init__(self, client: openai.AsyncOpenAI):
        import aiohttp
        import openai._base_client as sdk

        self._aiohttp, self._client = aiohttp, client
        self._httpx = getattr(sdk, "httpx2", None) or sdk.httpx   # openai>=3 ships httpx2
        self._merge_headers = sdk._merge_headers                    # fail here, not mid-run, if it moved
        try:
            from openai._utils._json import openapi_dumps as dumps  # the SDK's own body encoding
        except ImportError:
            dumps = json.dumps
        self._dumps = dumps
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        self.query = client.default_query or None
        self._session: Any = None
        self._headers: dict[str, str] | None = None

    @classmethod
    def for_chat(cls, chat: BaseChatModel, own_client: bool = False) -> "Wire | None":
        """A Wire when `chat` is a ChatOpenAI whose requests it can send exactly as the SDK would:
        a fixed API key (no workload identity, custom auth or key provider), no proxy in the
        environment (aiohttp and httpx read proxy settings differently), aiohttp installed, and no
        HTTP client of the caller's (its TLS, mounts or hooks would be bypassed); `own_client` says
        the chat model's client is teachgraph's own (teachgraph/transport.py)."""
        from langchain_openai import ChatOpenAI

        if type(chat) is not ChatOpenAI or getattr(chat, "openai_proxy", None) or proxy_configured():
            return None
        if not own_client and (getattr(chat, "http_async_client", None) is not None
                               or getattr(chat, "http_client", None) is not None):
            return None
        client = chat.root_async_client
        if (not isinstance(getattr(client, "api_key", None), str) or not client.api_key
                or getattr(client, "_api_key_provider", None) is not None
                or getattr(client, "custom_auth", None) is not None
                or getattr(client, "_workload_identity_auth", None) is not None
                or not hasattr(client, "_make_status_error_from_response")
                or not all(isinstance(v, str) for v in (client.default_query or {}).values())):
            return None
        try:
            return cls(client)
        except (ImportError, AttributeError):
            return None

    def headers(self) -> dict[str, str]:
        if self._headers is None:   # built in the event loop: the SDK's headers name the async library
            # as the SDK merges them: case-insensitively, the client's headers over the key's, Omit removes
            self._headers = self._merge_headers(self._client.auth_headers, self._client.default_headers,
                                                {"x-stainless-retry-count": "0"})
        return self._headers

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        aiohttp = self._aiohttp
        if self._session is None:
            # The SDK's TLS context (its trust store), no pool limit (nodes/endpoint.py limits requests in
            # flight) and no total timeout (nodes/endpoint.py bounds every attempt).
            connector = aiohttp.TCPConnector(ssl=self._httpx.create_ssl_context(), limit=0)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        try:
            # allow_redirects=False, as the SDK's httpx client: nodes/endpoint.py refuses redirects in one line
            async with self._session.post(self.url, data=self._dumps(body), headers=self.headers(),
                                          params=self.query, allow_redirects=False) as reply:
                content = await reply.read()
                status, reply_headers = reply.status, list(reply.headers.items())
        except aiohttp.ClientError as exc:      # refused, reset, cut short: retried as connection errors
            raise openai.APIConnectionError(request=self._httpx.Request("POST", self.url)) from exc
        if status >= 300:
            # aiohttp has already decoded the body: the headers must not tell httpx to decode it again
            reply_headers = [(k, v) for k, v in reply_headers
                             if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
            raise self._client._make_status_error_from_response(self._httpx.Response(
                status, headers=reply_headers, content=content, request=self._httpx.Request("POST", self.url)))
        try:
            return json.loads(content)
        except UnicodeDecodeError as exc:   # as a body that is not JSON: nodes/endpoint.py retries it as garbled
            raise json.JSONDecodeError(f"reply is not UTF-8 ({exc.reason})", "", 0) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def reply_tokens(reply: AIMessage) -> int:
    """The reply's total tokens, as counted and cached; what is not a count (negative, not a
    number) counts as 0."""
    try:
        return max(0, int((reply.usage_metadata or {}).get("total_tokens") or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def reply_usage(reply: AIMessage) -> tuple[int, int]:
    """The reply's (input, output) tokens, as billed; what is not a count counts as 0. A server that
    reports only a total has it counted as input (the larger share of most calls)."""
    def count(key: str) -> int:
        try:
            return max(0, int((reply.usage_metadata or {}).get(key) or 0))
        except (TypeError, ValueError, OverflowError):
            return 0
    input_tokens, output_tokens = count("input_tokens"), count("output_tokens")
    if not input_tokens and not output_tokens:
        return reply_tokens(reply), 0
    return input_tokens, output_tokens


def check_envelope(response: Any) -> None:
    """Raise BrokenReply unless `response` (a reply's JSON, or the SDK's ChatCompletion) is a chat
    completion with a message in its first choice: some servers and proxies answer 200 with
    `choices: []`, `choices: null`, no message, or an error object."""
    if not isinstance(response, dict):
        response = response.model_dump() if hasattr(response, "model_dump") else response
    if not isinstance(response, dict):
        raise BrokenReply(f"the reply is a JSON {type(response).__name__}, not an object")
    if response.get("error"):
        error = response["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise BrokenReply(f"the reply is an error: {' '.join(str(message or error).split())[:200]}")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise BrokenReply("the reply has no choices" if not choices else "the reply's choices are not a list")
    if not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
        raise BrokenReply("the reply's first choice has no message")


def proxy_configured() -> bool:
    """HTTP(S)_PROXY and the like are set (httpx honours them; aiohttp sessions here do not)."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())


def request_key(request: dict[str, Any]) -> str:
    """SHA-256 of a rendered request (ChatRequest.rendered): the response cache's key."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChatRequest:
    def __init__(self, chat: BaseChatModel, messages: list[BaseMessage], kwargs: dict[str, Any],
                 wire: Wire | None = None):
        self.chat, self.messages, self.kwargs, self.wire = chat, messages, kwargs, wire

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
            if self.wire is not None:
                response = await self.wire.post(self.body)
            else:
                response = await self.chat.root_async_client.post("/chat/completions", body=self.body,
                                                                  cast_to=ChatCompletion)
            check_envelope(response)
            result = self.chat._create_chat_result(response)
        else:
            result = await self.chat._agenerate(self.messages, **self.kwargs)
        return _message(result)


def _message(result: ChatResult) -> AIMessage:
    if not result.generations:   # the paths through LangChain, where the reply's JSON is not at hand
        raise BrokenReply("the reply has no choices")
    generation = result.generations[0]
    reply = generation.message
    # as ainvoke does: finish_reason and the like travel in generation_info
    reply.response_metadata = {**(generation.generation_info or {}), **reply.response_metadata}
    return reply
