"""Which structured-output strategy an endpoint honours, found with a few tiny requests and
cached per endpoint and model in runs.db (table `endpoint_probes`; no key is ever stored).

Servers differ: OpenAI and vLLM constrain output to a `json_schema` response format;
llama-cpp-python's server refuses that (500) but constrains `{"type": "json_object", "schema": ...}`;
some servers accept a response_format and ignore it, some only do tool calls. So each strategy is
tried on a question whose prompt does not name the fields: a reply that fits the schema shows the
server enforced it. The strongest enforced one wins; if none is, the run asks in the prompt alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import openai
import sqlite_utils
from pydantic import BaseModel, ValidationError

from nodes.endpoint import Endpoint, EndpointError, EndpointFatal, RetryPolicy
from nodes.llm import strip_fences, structured_request

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


async def probe(base_url: str, api_key: str, model: str, *, timeout: float = 60.0,
                max_tokens: int = 64) -> Probe:
    """Plain text first (it also checks the key and the model: EndpointFatal stops here), then each
    structured strategy."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
    endpoint = Endpoint(base_url, 1, RetryPolicy(attempts=2, timeout=timeout, backoff=0.5, give_up_after=99),
                        secrets=[api_key])
    checks: list[Check] = []
    async with client:
        for mode in ("prompt", *STRONGEST_FIRST):
            checks.append(await _check(client, endpoint, model, mode, max_tokens))
    if checks[0].outcome != "works":
        raise EndpointFatal(f"{base_url} does not answer a plain chat request for model {model!r}: {checks[0].detail}")
    strategy = next((c.mode for c in checks[1:] if c.outcome == "works"), "prompt")
    return Probe(base_url.rstrip("/"), model, strategy, checks, time.time())


async def _check(client: openai.AsyncOpenAI, endpoint: Endpoint, model: str, mode: str, max_tokens: int) -> Check:
    options = structured_request(mode, ProbeReply)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    try:
        reply = await endpoint.request(lambda: client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0, **options))
    except EndpointFatal:
        raise
    except EndpointError as exc:
        return Check(mode, "refused", str(exc))
    choice = reply.choices[0] if reply.choices else None
    if choice is None:
        return Check(mode, "refused", "the reply has no choices")
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


# ---------------------------------------------------------------- cache (runs.db)

def cached(db: sqlite_utils.Database, endpoint: str, model: str) -> Probe | None:
    if "endpoint_probes" not in db.table_names():
        return None
    rows = list(db.query("select * from endpoint_probes where endpoint = ? and model = ?",
                         [endpoint.rstrip("/"), model]))
    if not rows:
        return None
    row = rows[0]
    return Probe(row["endpoint"], row["model"], row["strategy"],
                 [Check(**c) for c in json.loads(row["checks"])], row["probed"])


def remember(db: sqlite_utils.Database, result: Probe) -> None:
    db["endpoint_probes"].upsert({"endpoint": result.endpoint, "model": result.model, "strategy": result.strategy,
                                  "checks": json.dumps([asdict(c) for c in result.checks]),
                                  "probed": result.probed}, pk=("endpoint", "model"))
