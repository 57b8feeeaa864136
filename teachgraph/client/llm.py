"""Every model call goes through here: one OpenAI-compatible endpoint (retries, deadlines and
the in-flight limit are client/endpoint.py's), or several servers of one model as lanes (the embedded
model runs one per idle core), usage counters, and structured output validated with pydantic (with
correction rounds)."""

from __future__ import annotations

import functools
import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from teachgraph.client.budget import Meter
from teachgraph.client.chat_call import ChatRequest, Wire, reply_tokens, reply_usage, request_key
from teachgraph.client.endpoint import Endpoint
from teachgraph.extensions import Registry
from teachgraph.options import DEFAULTS

# How to ask an endpoint for JSON. Servers differ (README, "Using another endpoint"): OpenAI and vLLM take
# "json_schema"; llama-cpp-python's server rejects it but constrains output with a grammar
# when given {"type": "json_object", "schema": ...}; "tools" forces a call of one function whose
# parameters are the schema; "prompt" sends no response_format at all. `endpoint probe` finds out
# which of these an endpoint honours (teachgraph/probe.py). Each mode is registered below by name,
# as a plugin's would be (teachgraph/extensions.py; entry-point group teachgraph.response_modes).
StructuredMode = str

# Which lane a task's calls take when an LLM has several (LLM.lanes): the runner sets it per seed, so
# all of a seed's calls reach the same server and find its passages in that server's prompt cache.
LANE: ContextVar[int] = ContextVar("teachgraph_lane", default=0)


@dataclass(frozen=True)
class ResponseMode:
    """A registered response mode: `request(schema)` gives the request options that ask for `schema`."""

    name: str
    request: Callable[[type[BaseModel]], dict[str, Any]]


MODES: Registry[ResponseMode] = Registry("response mode", ResponseMode, group="teachgraph.response_modes")


class ReplyCache(Protocol):
    """What the client needs of a response cache (the store's ResponseCache, checkpoints/cache.py,
    which sits above the client): replies by request key."""

    def get(self, key: str) -> AIMessage | None: ...
    def put(self, key: str, reply: AIMessage) -> bool: ...
    def forget(self, key: str) -> None: ...


class UnusableOutput(ValueError):
    """The model's output stayed invalid after the allowed corrections: the item is rejected."""

    def __init__(self, reason: str, usage: "Usage | None" = None):
        super().__init__(reason)
        self.usage = usage if usage is not None else Usage()


@dataclass
class Usage:
    calls: int = 0          # requests the endpoint answered
    tokens: int = 0
    cache_hits: int = 0     # replies served by the response cache (no request, no tokens)
    input_tokens: int = 0   # of `tokens`: the prompts' and the replies' (prices differ)
    output_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.calls += other.calls
        self.tokens += other.tokens
        self.cache_hits += other.cache_hits
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens


# Large length bounds stay in pydantic validation but are not sent: llama.cpp turns maxLength=400
# into a grammar with 400 nested repetitions, refuses it, and llama-cpp-python's server then dies
# (measured). Small bounds are cheap and useful ("answer" must not be empty), so they stay.
_BOUNDS = {"maxLength", "minLength", "maxItems", "minItems"}
_LARGEST_WIRE_BOUND = 32


def wire_schema(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: wire_schema(v) for k, v in node.items()
                if not (k == "title" and isinstance(v, str))
                and not (k in _BOUNDS and isinstance(v, int) and v > _LARGEST_WIRE_BOUND)}
    if isinstance(node, list):
        return [wire_schema(v) for v in node]
    return node


@MODES.register("json_schema")
def _json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {
        "name": schema.__name__, "schema": wire_schema(schema.model_json_schema()), "strict": False}}}


@MODES.register("json_object")
def _json_object(schema: type[BaseModel]) -> dict[str, Any]:
    return {"response_format": {"type": "json_object", "schema": wire_schema(schema.model_json_schema())}}


@MODES.register("tools")
def _tools(schema: type[BaseModel]) -> dict[str, Any]:
    name = schema.__name__
    return {"tools": [{"type": "function", "function": {
                "name": name, "description": "Record the reply.",
                "parameters": wire_schema(schema.model_json_schema())}}],
            "tool_choice": {"type": "function", "function": {"name": name}}}


@MODES.register("prompt")
def _prompt_only(schema: type[BaseModel]) -> dict[str, Any]:
    return {}


# Cached per schema class: building a JSON schema costs more CPU than a fast endpoint's reply (profiled).
@functools.lru_cache(maxsize=1024)
def structured_request(mode: StructuredMode, schema: type[BaseModel]) -> dict[str, Any]:
    """The request options that ask for `schema` in `mode`."""
    return MODES.get(mode).request(schema)


def response_format(mode: StructuredMode, schema: type[BaseModel]) -> dict | None:
    return structured_request(mode, schema).get("response_format")


def reply_text(reply: AIMessage) -> str:
    """The JSON text of a reply: a tool call's arguments if there is one, else the content."""
    if reply.tool_calls:
        return json.dumps(reply.tool_calls[0]["args"])
    if reply.invalid_tool_calls:
        return str(reply.invalid_tool_calls[0].get("args") or "")
    return str(reply.content)


@functools.lru_cache(maxsize=1024)
def schema_hint(schema: type[BaseModel]) -> str:
    """A compact description of the expected JSON, appended to the user turn."""
    props = schema.model_json_schema().get("properties", {})
    lines = [f"- {name}: {spec.get('description', spec.get('type', 'value'))}" for name, spec in props.items()]
    return "Reply with one JSON object only, with these fields:\n" + "\n".join(lines)


def _finish_reason(message: AIMessage) -> str | None:
    return (message.response_metadata or {}).get("finish_reason")


@dataclass
class Lane:
    """One server of the model: the chat model and Wire that reach it, and its Endpoint (its own in-flight
    limit, retries and, for the embedded model, the supervisor that restarts it)."""

    chat: BaseChatModel
    wire: Wire | None
    endpoint: Endpoint


@dataclass
class LLM:
    """A chat model plus the policies teachgraph applies to every call. `lanes` lists every server of the
    same model (one unless given), and a call takes lane LANE % len(lanes); `chat`, `wire` and `endpoint`
    are the first lane's (taken from `lanes` when it is given)."""

    chat: BaseChatModel
    model_name: str
    structured_mode: StructuredMode = "json_schema"
    max_concurrency: int = DEFAULTS.concurrency
    max_tokens: int = DEFAULTS.max_tokens
    token_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    fix_attempts: int = 2
    usage: Usage = field(default_factory=Usage)  # process-wide, for the progress bar
    endpoint: Endpoint | None = None             # retries, deadline, adaptive in-flight limit
    cache: ReplyCache | None = None
    wire: Wire | None = None                     # the shortest path for a plain ChatOpenAI (nodes/chat_call.py)
    meter: Meter | None = None                   # the run's spend and budget (client/budget.py)
    judge: "LLM | None" = None                   # the model checks ask (`--judge-model`); None: this one
    lanes: list[Lane] = field(default_factory=list)
    # what the response cache's key calls the endpoint instead of its URL: one name for all the lanes
    # (which server answers does not change the reply), and the embedded model's servers get a new port
    # every run, while a reply cached by one run must serve the next
    cache_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.lanes:
            first = self.lanes[0]
            self.chat, self.wire, self.endpoint = first.chat, first.wire, first.endpoint
        else:
            if self.endpoint is None:
                self.endpoint = Endpoint(self.model_name, self.max_concurrency)
            self.lanes = [Lane(self.chat, self.wire, self.endpoint)]
        self.metered(self.meter)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [lane.endpoint for lane in self.lanes]

    def metered(self, meter: Meter | None) -> None:
        """Record every reply's spend in `meter` and let it refuse calls once the budget is spent (the
        check is the endpoint's, where each request starts)."""
        self.meter = meter
        for endpoint in self.endpoints:
            endpoint.gate = meter

    async def aclose(self) -> None:
        """Close the HTTP clients inside the loop that used them (aiohttp warns otherwise)."""
        for lane in self.lanes:
            if lane.wire is not None:
                await lane.wire.aclose()
            client = getattr(lane.chat, "http_async_client", None)
            if client is not None:
                await client.aclose()
        if self.judge is not None and self.judge is not self:
            await self.judge.aclose()

    def _count(self, call: Usage, used: Usage) -> None:
        used.add(call)
        self.usage.add(call)
        if self.meter is not None and call.calls:
            self.meter.record(call.input_tokens, call.output_tokens, call.calls)

    async def _call(self, messages: list[BaseMessage], max_tokens: int | None,
                    options: dict[str, Any], used: Usage, read_cache: bool = True) -> tuple[AIMessage, str | None]:
        """One reply, from the cache or the endpoint, and its cache key (None without a cache). The
        caller stores the reply (`self.cache.put`) once it has used it."""
        limit = max_tokens or self.max_tokens
        if self.token_param == "max_tokens":
            # langchain-openai renames max_tokens to max_completion_tokens, which llama-cpp-python
            # ignores: replies then run to the context limit (measured: minutes per call).
            kwargs: dict[str, Any] = {"extra_body": {"max_tokens": limit}}
        else:
            kwargs = {"max_tokens": limit, "extra_body": {}}  # sent as max_completion_tokens (OpenAI reasoning models)
        kwargs.update(options)
        if "response_format" in kwargs:
            # Sent as-is in the body. As a keyword, langchain-openai would route the call through the
            # SDK's beta `parse` path: ~1.7 ms more CPU per call (profiled), and finish_reason=length
            # raised as an exception instead of returned.
            kwargs["extra_body"]["response_format"] = kwargs.pop("response_format")

        lane = self.lanes[LANE.get() % len(self.lanes)]
        request = ChatRequest(lane.chat, messages, kwargs, lane.wire)
        key = None
        if self.cache is not None:
            rendered = request.rendered()
            if self.cache_endpoint:
                rendered["endpoint"] = self.cache_endpoint
            key = request_key(rendered)
        reply = self.cache.get(key) if key and read_cache else None
        if reply is not None:
            self._count(Usage(cache_hits=1), used)
        else:
            # a 200 with no usable completion is still a call the endpoint answered
            reply = await lane.endpoint.request(request.send,
                                                on_broken_reply=lambda: self._count(Usage(calls=1), used))
            input_tokens, output_tokens = reply_usage(reply)
            self._count(Usage(1, reply_tokens(reply), 0, input_tokens, output_tokens), used)
        return reply, key

    def _read(self, reply: AIMessage, schema: type[BaseModel], check: Callable[[Any], None] | None,
              max_tokens: int | None) -> tuple[Any, str, str]:
        """(value, "", "") for a usable reply, else (None, the problem, the correction to send back)."""
        if _finish_reason(reply) == "length":
            return (None, f"output truncated at max_tokens={max_tokens or self.max_tokens}",
                    "Your reply was cut off. Reply again with a shorter, complete JSON object.")
        try:
            # strict=False: grammar-constrained output may hold raw newlines inside strings.
            value = schema.model_validate(json.loads(strip_fences(reply_text(reply)), strict=False))
            if check is not None:
                check(value)
            return value, "", ""
        except (ValidationError, ValueError) as exc:
            problem = _short_error(exc)
            return None, problem, f"That reply is not valid: {problem}. Reply again with corrected JSON only."

    async def structured(self, system: str, user: str, schema: type[BaseModel], *,
                         check: Callable[[Any], None] | None = None,
                         max_tokens: int | None = None, used: Usage | None = None) -> tuple[Any, Usage]:
        """Ask for `schema`; on invalid output send the error back, up to `fix_attempts` times.

        `check` may raise ValueError for semantic problems pydantic cannot see (e.g. a cited
        passage id that is not in the context); it gets the same correction treatment.
        Calls are counted into `used` (given, it still holds them if an endpoint error escapes).
        """
        used = used if used is not None else Usage()
        options = structured_request(self.structured_mode, schema)
        # The reply's fields end the user turn, not the system prompt: what an agent's calls have in common
        # (its instructions, a seed's material) then comes first, and a server's prompt cache reuses it
        # across agents whose schemas differ (README, "The embedded model").
        messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(f"{user}\n\n{schema_hint(schema)}")]
        problem = ""
        for _ in range(self.fix_attempts + 1):
            reply, key = await self._call(messages, max_tokens, options, used)
            value, problem, correction = self._read(reply, schema, check, max_tokens)
            cached = bool((reply.response_metadata or {}).get("cache_hit"))
            if problem and cached:
                # stored by an older teachgraph, which cached every reply: never served, ask the endpoint
                self.cache.forget(key)
                reply, key = await self._call(messages, max_tokens, options, used, read_cache=False)
                value, problem, correction = self._read(reply, schema, check, max_tokens)
                cached = False
            if not problem:
                if key and not cached:
                    # Only replies that were used are cached: a malformed, truncated or empty one served
                    # again would keep a healthy endpoint from ever being asked.
                    self.cache.put(key, reply)
                return value, used
            messages = [*messages, AIMessage(reply_text(reply)[:2000]), HumanMessage(correction)]
        raise UnusableOutput(f"{schema.__name__}: {problem} (after {self.fix_attempts} corrections)", used)


def strip_fences(content: str) -> str:
    """Small models often wrap JSON in ``` fences even when asked not to."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()[:3]]
        return "; ".join(parts)
    return str(exc)[:300]
