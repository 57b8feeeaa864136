"""Which structured-output strategy an endpoint honours, found with a few tiny requests and
cached per endpoint and model by the store (Registry.probe_result / remember_probe in
checkpoints/registry.py; no key is ever stored).

Servers differ: OpenAI and vLLM constrain output to a `json_schema` response format;
llama-cpp-python's server refuses that (500) but constrains `{"type": "json_object", "schema": ...}`;
some servers accept a response_format and ignore it, some only do tool calls. So each strategy is
tried on a question whose prompt does not name the fields: a reply that fits the schema shows the
server enforced it. The strongest enforced one wins; if none is, the run asks in the prompt alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Literal

import openai
from pydantic import BaseModel, ValidationError

from teachgraph.client.chat_call import check_envelope
from teachgraph.client.endpoint import Endpoint, EndpointError, EndpointFatal, RequestRejected, RetryPolicy
from teachgraph.client.llm import strip_fences, structured_request
from teachgraph.client.transport import async_http_client

STRONGEST_FIRST = ("json_schema", "json_object", "tools")


class ProbeReply(BaseModel):
    color: Literal["red", "green", "blue"]
    count: int


SYSTEM = "You are checking a connection. Reply in JSON."   # OpenAI's json_object needs the word JSON
USER = "Pick something."


@dataclass
class Check:
    mode: str
    outcome: str        # works | ignored | refused
    detail: str


@dataclass
class Probe:
    endpoint: str
    model: str
    strategy: str
    checks: list[Check] = field(default_factory=list)
    probed: float = 0.0


# At most this many attempts per probe request, within the run's --retries: a server that refuses a
# response format with a 500 (llama-cpp-python's json_schema) must not cost a run's whole retry budget.
PROBE_ATTEMPTS = 3


async def probe(base_url: str, api_key: str, model: str, *, timeout: float = 60.0, attempts: int = PROBE_ATTEMPTS,
                max_tokens: int = 64) -> Probe:
    """Plain text first (it also checks the key and the model: a failure stops here, at once), then
    each structured strategy. `timeout` bounds each attempt; `attempts` (capped at PROBE_ATTEMPTS)
    is how many each request gets. EndpointFatal when the endpoint cannot be probed: nothing is known."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout,
                                http_client=async_http_client())   # a run's client: redirects refused
    policy = RetryPolicy(attempts=max(1, min(attempts, PROBE_ATTEMPTS)), timeout=timeout, backoff=0.5,
                         give_up_after=99)
    endpoint = Endpoint(base_url, 1, policy, secrets=[api_key])
    async with client:
        try:
            checks = [_read(await _ask(client, endpoint, model, "prompt", max_tokens), "prompt")]
        except EndpointFatal:
            raise
        except EndpointError as exc:
            raise EndpointFatal(f"{base_url} does not answer a plain chat request for model {model!r}: {exc}") from None
        for mode in STRONGEST_FIRST:
            checks.append(await _check(client, endpoint, model, mode, max_tokens))
    strategy = next((c.mode for c in checks[1:] if c.outcome == "works"), "prompt")
    return Probe(base_url.rstrip("/"), model, strategy, checks, time.time())


async def _ask(client: openai.AsyncOpenAI, endpoint: Endpoint, model: str, mode: str, max_tokens: int):
    options = structured_request(mode, ProbeReply)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]

    async def send():
        reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                     temperature=0, **options)
        check_envelope(reply)   # a 200 with no choices is a broken reply (retried), not an answer
        return reply
    return await endpoint.request(send)


async def _check(client: openai.AsyncOpenAI, endpoint: Endpoint, model: str, mode: str, max_tokens: int) -> Check:
    """A 4xx is a refusal. A transient error is not, with one exception: a server that answers a
    response format it does not know with a 500 (llama-cpp-python and json_schema). That looks like a
    burst of 500s, so it counts as a refusal only if a plain request succeeds right after and the
    mode fails again; anything else transient stops the probe with nothing cached."""
    async def attempt() -> Check | EndpointError:
        """The mode asked once: its check, or the transient error it met (fatal errors propagate)."""
        try:
            return _read(await _ask(client, endpoint, model, mode, max_tokens), mode)
        except EndpointFatal:
            raise
        except RequestRejected as exc:
            return Check(mode, "refused", str(exc))
        except EndpointError as exc:
            return exc

    first = await attempt()
    if isinstance(first, Check):
        return first
    if first.kind != "500":
        raise _inconclusive(endpoint, mode, first)
    try:
        await _ask(client, endpoint, model, "prompt", max_tokens)
    except EndpointFatal:
        raise
    except EndpointError as exc:
        raise _inconclusive(endpoint, mode, exc) from None
    again = await attempt()
    if isinstance(again, Check):
        return again
    if again.kind != "500":
        raise _inconclusive(endpoint, mode, again)
    return Check(mode, "refused", str(again))


def _inconclusive(endpoint: Endpoint, mode: str, exc: EndpointError) -> EndpointFatal:
    return EndpointFatal(f"{endpoint.name} kept failing while probing {mode} ({exc}); nothing was cached: "
                         f"probe again later, or choose --structured")


def _read(reply, mode: str) -> Check:
    """What a reply shows about `mode`: works (the reply follows the schema) or ignored."""
    choice = reply.choices[0]
    if mode == "prompt":
        return Check(mode, "works", f"replied {_snippet(choice.message.content or '')}")
    calls = choice.message.tool_calls or []
    text = calls[0].function.arguments if mode == "tools" and calls else (choice.message.content or "")
    if mode == "tools" and not calls:
        return Check(mode, "ignored", f"accepted, but replied with text, not a tool call: {_snippet(text)}")
    try:
        ProbeReply.model_validate(json.loads(strip_fences(text), strict=False))
    except (ValueError, ValidationError):
        return Check(mode, "ignored", f"accepted, but the reply does not follow the schema: {_snippet(text)}")
    return Check(mode, "works", f"replied {_snippet(text)}")


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")
