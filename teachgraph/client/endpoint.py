"""Every request to a model endpoint goes through an Endpoint: a deadline per request, retries with
backoff for what is transient, Retry-After honoured, and an adaptive limit on requests in flight.

Why not the openai SDK's own retries (`ChatOpenAI(max_retries=N)`)? They do honour Retry-After
(retry-after-ms, then Retry-After as seconds or an HTTP date, up to 120 s; a longer one is not
retried at all) and otherwise back off 0.5 s doubling to 8 s. But they happen inside one call where
nothing else can see them: the in-flight limit could not shrink on a 429, and the other requests
would keep hammering a rate-limited endpoint. So clients are built with max_retries=0 and every
retry happens here, where the limiter sees each 429.

Errors leave as one of four EndpointError kinds, each a one-line message with the API key removed:
EndpointFatal stops the run (bad key, unknown model: no retry can fix it, every seed would fail
alike), RequestRejected fails this seed (400: e.g. its prompt is longer than the model's context),
EndpointUnavailable fails this seed after the retries ran out (resume retries it), and
EndpointFatal again when several requests in a row ran out of retries (the endpoint is down:
stop instead of failing seed after seed).

When this process runs the server itself (the embedded model), a ServerWatch tells requests to wait
while it restarts a crashed server, so a crash costs no retries (teachgraph/embedded.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Protocol, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from teachgraph.errors import TeachgraphError
from teachgraph.options import DEFAULTS

T = TypeVar("T")


class EndpointError(TeachgraphError, RuntimeError):
    """An endpoint failure, described in one line that never holds the API key. `kind` says what the
    last attempt met (a status such as "500", "timeout", "connection", "broken"), when it was transient."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind


class EndpointFatal(EndpointError):
    """No retry and no other seed can succeed: stop the run (it stays resumable)."""


class RequestRejected(EndpointError):
    """The endpoint refused this request for good (4xx): the seed fails at this node."""


class EndpointUnavailable(EndpointError):
    """Transient errors outlasted every retry: the seed fails at this node; resume retries it."""


class BrokenReply(ValueError):
    """A 200 whose body is not a chat completion (no choices, no message, an error object): the
    endpoint answered (the call counts) but nothing in it can be used. Retried like a garbled reply."""


class _Transient(Exception):
    """One failed attempt worth retrying (internal to Endpoint.request)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class _ServerLost(Exception):
    """The server process died under the request (internal to Endpoint._attempt)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = DEFAULTS.retries   # per request, the first included (waits add up to ~1.5-3 min)
    timeout: float = DEFAULTS.timeout  # seconds per attempt, whatever the transport does
    backoff: float = 0.5               # first wait; doubles per attempt, full jitter
    max_backoff: float = 60.0
    max_retry_after: float = 600.0     # a longer Retry-After (a spent daily quota) stops the run
    give_up_after: int = 3             # requests in a row out of retries: the endpoint is down


class CallGate(Protocol):
    """Asked before every request starts (teachgraph/client/budget.py's Meter: the run's budget).
    `admit` raises to refuse it; nothing is sent then."""

    def admit(self) -> None: ...


class ServerWatch(Protocol):
    """The server process behind an endpoint, when this process runs and restarts it
    (teachgraph/embedded.py). Requests wait while it restarts instead of spending their attempts on a
    dead port, and a request cut off by its death is sent again without counting as an attempt, so
    neither the retries nor the "requests in a row" rule fire because of a crash being handled."""

    async def ready(self) -> int:
        """Wait until the server is up; returns which start of it this is. EndpointFatal: it stays down."""

    async def lost(self, incarnation: int) -> bool:
        """After a connection error on a request to `incarnation`: did that process die?"""

    def answered(self) -> None:
        """A request got a reply."""


# ---------------------------------------------------------------- adaptive concurrency

class AdaptiveLimit:
    """AIMD on requests in flight, as TCP does with its window: a 429 halves the limit (once per
    window: the other requests already in flight when it came say nothing new), and every `limit`
    successes in a row add one, up to the configured maximum. `hold` pauses new requests (Retry-After)."""

    def __init__(self, maximum: int):
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.lowest = self.maximum
        self.in_flight = 0
        self._successes = 0
        self._generation = 0
        self._hold_until = 0.0
        self._cond: asyncio.Condition | None = None

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:  # created lazily so it binds to the running event loop
            self._cond = asyncio.Condition()
        return self._cond

    def hold(self, seconds: float) -> None:
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    async def acquire(self) -> int:
        """Wait for a free slot; returns the generation the request starts in."""
        while True:
            while (pause := self._hold_until - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            async with self.cond:
                await self.cond.wait_for(lambda: self.in_flight < self.limit)
                if self._hold_until <= time.monotonic():
                    self.in_flight += 1
                    return self._generation

    async def release(self, generation: int, outcome: str) -> None:
        """outcome: "ok", "overloaded" (a 429) or anything else (counts for nothing)."""
        async with self.cond:
            self.in_flight -= 1
            if outcome == "ok":
                self._successes += 1
                if self._successes >= self.limit and self.limit < self.maximum:
                    self.limit += 1
                    self._successes = 0
            elif outcome == "overloaded":
                self._successes = 0
                if generation == self._generation:
                    self.limit = max(1, self.limit // 2)
                    self.lowest = min(self.lowest, self.limit)
                    self._generation += 1
            self.cond.notify_all()


# ---------------------------------------------------------------- errors, one line each

def retry_after_seconds(headers) -> float | None:
    """Retry-After-Ms, or Retry-After as seconds or an HTTP date (RFC 9110); None if absent or unreadable."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        text = str(message or body)
    elif body is not None:
        text = str(body)
    else:
        text = exc.message
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= 300 else text[:297] + "..."


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by ***. A secret of 8 characters or more goes wherever it
    appears; a shorter one only where it stands as a whole token, so that a key such as "k" is still
    hidden in "Bearer k" without mangling every word holding a k."""
    for secret in secrets:
        if not secret:
            continue
        if len(secret) >= 8:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


_CONTEXT_WORDS = re.compile(r"context|too many tokens|prompt is too long|maximum.*length|too long", re.I)


def is_transient_status(status: int) -> bool:
    return status in (408, 409, 425, 429) or (status >= 500 and status not in (501, 505))


class Endpoint:
    """One OpenAI-compatible endpoint as seen by this process: its limiter, policy and figures."""

    def __init__(self, name: str = "endpoint", max_concurrency: int = DEFAULTS.concurrency,
                 policy: RetryPolicy = RetryPolicy(),
                 secrets: Iterable[str] = (), server: ServerWatch | None = None, gate: CallGate | None = None):
        self.name = name
        self.server = server
        self.gate = gate
        self.policy = policy
        self.limit = AdaptiveLimit(max_concurrency)
        self.stats: Counter = Counter()
        self._secrets = [s for s in secrets if s]
        self._exhausted_in_a_row = 0

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    async def request(self, send: Callable[[], Awaitable[T]],
                      on_broken_reply: Callable[[], None] | None = None) -> T:
        """`send` makes one attempt. Transient failures are retried; the rest leave as EndpointError.
        `on_broken_reply` is called for every attempt the endpoint answered with a 200 that held no
        usable completion (BrokenReply): those are calls made, whatever happens next."""
        retrying = AsyncRetrying(stop=stop_after_attempt(self.policy.attempts), wait=self._wait,
                                 retry=retry_if_exception_type(_Transient), reraise=True,
                                 before_sleep=self._count_retry)
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        result = await self._attempt(send)
                    except _Transient as exc:
                        if exc.kind == "broken" and on_broken_reply is not None:
                            on_broken_reply()
                        raise
        except _Transient as exc:
            self.stats["gave up"] += 1
            self._exhausted_in_a_row += 1
            message = self.redact(f"{exc} (still failing after {self.policy.attempts} attempts)")
            if self._exhausted_in_a_row >= self.policy.give_up_after:
                raise EndpointFatal(f"the endpoint {self.name} looks down: {self._exhausted_in_a_row} requests "
                                    f"in a row failed every retry; last: {message}", exc.kind) from None
            raise EndpointUnavailable(message, exc.kind) from None
        self._exhausted_in_a_row = 0
        return result

    async def _attempt(self, send: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await self._attempt_once(send)
            except _ServerLost:  # sent again once the server is back, and not counted as an attempt
                self.stats["repeated"] += 1

    async def _attempt_once(self, send: Callable[[], Awaitable[T]]) -> T:
        generation = await self.limit.acquire()
        outcome = "error"
        incarnation = None
        try:
            if self.server is not None:   # waits, holding the slot, while the server restarts
                incarnation = await self.server.ready()
            if self.gate is not None:     # here, slot in hand: a request queued for a slot is not yet in flight
                self.gate.admit()
            self.stats["requests"] += 1
            async with asyncio.timeout(self.policy.timeout):
                result = await send()
            outcome = "ok"
            if self.server is not None:
                self.server.answered()
            return result
        except TimeoutError:
            raise _Transient("timeout", f"no reply within {self.policy.timeout:g} s") from None
        except openai.APITimeoutError:
            raise _Transient("timeout", f"no reply within {self.policy.timeout:g} s (transport timeout)") from None
        except openai.APIConnectionError as exc:
            if incarnation is not None and await self.server.lost(incarnation):
                raise _ServerLost() from None
            cause = exc.__cause__ or exc
            raise _Transient("connection", f"cannot connect to {self.name}: "
                             f"{type(cause).__name__}: {str(cause)[:200]}") from None
        except json.JSONDecodeError:
            raise _Transient("garbled", "the endpoint sent a reply that is not JSON") from None
        except BrokenReply as exc:
            raise _Transient("broken", f"{self.name} sent a reply that is not a chat completion: {exc}") from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 429:
                outcome = "overloaded"
            raise self._classify(exc) from None
        finally:
            await self.limit.release(generation, outcome)

    def _classify(self, exc: openai.APIStatusError) -> Exception:
        status, text = exc.status_code, self.redact(server_message(exc))
        if is_transient_status(status):
            wait = retry_after_seconds(exc.response.headers if exc.response is not None else None)
            if wait is not None and wait > self.policy.max_retry_after:
                return EndpointFatal(f"the endpoint {self.name} asks to wait {wait:.0f} s before the next request "
                                     f"({status}: {text}); resume the run later")
            return _Transient(str(status), f"{status} from {self.name}: {text}", wait)
        if 300 <= status < 400:
            # Not followed: a 301/302 turns the POST into a GET, and any redirect could carry the key elsewhere.
            location = exc.response.headers.get("location") if exc.response is not None else None
            return EndpointFatal(f"the endpoint {self.name} redirects model calls ({status}) to "
                                 f"{self.redact(location or 'an unnamed location')}; use that address as --base-url")
        if status == 401:
            return EndpointFatal(f"the endpoint {self.name} refused the API key (401: {text}); "
                                 f"check OPENAI_API_KEY")
        if status == 403:
            return EndpointFatal(f"the endpoint {self.name} denied access (403: {text})")
        if status == 404:
            return EndpointFatal(f"not found at {self.name} (404: {text}); check --model and --base-url")
        if status in (400, 413, 422) and _CONTEXT_WORDS.search(text):
            return RequestRejected(f"prompt too long for the model's context window ({status}: {text})")
        return RequestRejected(f"the endpoint rejected the request ({status}: {text})")

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # Honour it for everyone: no request starts before then. A little jitter spreads the herd.
            self.limit.hold(retry_after)
            return retry_after + random.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
        ceiling = min(self.policy.max_backoff, self.policy.backoff * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)  # "full jitter": spreads retries of requests that failed together

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.stats[f"retried {getattr(exc, 'kind', '?')}"] += 1

    def summary(self) -> str:
        """One line of figures for the end of a run."""
        return summary([self])


def summary(endpoints: list[Endpoint]) -> str:
    """One line of figures for the end of a run, over every server of its model (LLM.lanes)."""
    stats: Counter = Counter()
    for endpoint in endpoints:
        stats.update(endpoint.stats)
    retried = {k.removeprefix("retried "): v for k, v in sorted(stats.items()) if k.startswith("retried ")}
    parts = [f"{stats['requests']} requests", f"{sum(retried.values())} retried"]
    if retried:
        parts[-1] += " (" + ", ".join(f"{k}: {v}" for k, v in retried.items()) + ")"
    if stats["repeated"]:
        parts.append(f"{stats['repeated']} repeated after the server restarted")
    if stats["gave up"]:
        parts.append(f"{stats['gave up']} gave up")
    limits = [endpoint.limit for endpoint in endpoints]
    parts.append(f"in-flight limit {sum(x.limit for x in limits)}/{sum(x.maximum for x in limits)} "
                 f"(lowest {sum(x.lowest for x in limits)})")
    if len(endpoints) > 1:
        parts.append(f"over {len(endpoints)} servers")
    return ", ".join(parts)
