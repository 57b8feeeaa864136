"""nodes/endpoint.py against the fake OpenAI-compatible server: which errors are retried, how long
it waits, how the in-flight limit reacts to 429s, and the one-line errors for what cannot be retried."""

from __future__ import annotations

import asyncio
import collections
import email.utils
import threading
import time

import httpx
import pytest
from langchain_openai import ChatOpenAI

from teachgraph.client.endpoint import (AdaptiveLimit, Endpoint, EndpointFatal, EndpointUnavailable, RequestRejected,
                            RetryPolicy, retry_after_seconds)
from teachgraph.testing.fake_openai import FakeOpenAI

FAST = RetryPolicy(attempts=6, timeout=5.0, backoff=0.01, max_backoff=0.05)
KEY = "sk-test-ENDPOINT-key-0123456789"


def call_n(fake: FakeOpenAI, n: int, policy: RetryPolicy = FAST, concurrency: int = 4,
           endpoint: Endpoint | None = None):
    """Send n chat requests through one Endpoint; returns (results or exceptions, endpoint)."""
    endpoint = endpoint or Endpoint(fake.base_url, concurrency, policy, secrets=[KEY])

    async def main():
        chat = ChatOpenAI(base_url=fake.base_url, api_key=KEY, model="m", max_retries=0, timeout=policy.timeout)

        async def one(i):
            try:
                return await endpoint.request(lambda: chat.ainvoke(f"hello {i}"))
            except Exception as exc:  # noqa: BLE001 - the test looks at what came out
                return exc
        return await asyncio.gather(*(one(i) for i in range(n)))
    return asyncio.run(main()), endpoint


def test_retry_after_is_read_as_seconds_milliseconds_or_an_http_date():
    assert retry_after_seconds(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert retry_after_seconds(httpx.Headers({"Retry-After-Ms": "250", "Retry-After": "9"})) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= retry_after_seconds(httpx.Headers({"Retry-After": date})) <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"Retry-After": past})) == 0.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None


def test_aimd_halves_once_per_window_and_climbs_back_one_per_window():
    async def main():
        limit = AdaptiveLimit(8)
        gens = [await limit.acquire() for _ in range(8)]
        assert limit.in_flight == 8
        for g in gens[:3]:                     # three 429s from the same window: one halving
            await limit.release(g, "overloaded")
        assert limit.limit == 4 and limit.lowest == 4
        for g in gens[3:5]:                    # errors that are not 429s change nothing
            await limit.release(g, "error")
        assert limit.limit == 4 and limit.in_flight == 3
        g = await limit.acquire()               # a request of the new window is rate-limited too
        await limit.release(g, "overloaded")
        assert limit.limit == 2
        for g in gens[5:]:
            await limit.release(g, "ok")        # 3 successes: a window of 2 adds one
        assert limit.limit == 3 and limit.in_flight == 0
        for _ in range(40):
            g = await limit.acquire()
            await limit.release(g, "ok")
        assert limit.limit == 8 and limit.lowest == 2   # never above the configured maximum
    asyncio.run(asyncio.wait_for(main(), 10))


def test_transient_errors_are_retried_until_they_pass():
    kinds = {"500": 0.1, "503": 0.1, "429-bare": 0.1, "reset": 0.1, "garbled": 0.1}
    with FakeOpenAI(faults=kinds, seed=3) as fake:
        results, endpoint = call_n(fake, 30)
        injected = sum(fake.injected.values())
    assert all(r.content.startswith("fake answer") for r in results)
    retried = sum(v for k, v in endpoint.stats.items() if k.startswith("retried "))
    assert injected > 5 and retried == injected                    # every fault retried, once each
    assert endpoint.stats["requests"] == 30 + injected
    print(f"\nendpoint faults: injected {injected} {dict(fake.injected)}; retried {retried}; all 30 calls survived")


def test_a_request_that_stalls_times_out_and_is_retried():
    policy = RetryPolicy(attempts=4, timeout=0.5, backoff=0.01)
    with FakeOpenAI(faults={"timeout": 0.5}, seed=1, timeout_sleep=20) as fake:
        start = time.monotonic()
        results, endpoint = call_n(fake, 6, policy)
        elapsed = time.monotonic() - start
    assert all(r.content.startswith("fake answer") for r in results)
    assert endpoint.stats["retried timeout"] == fake.injected["timeout"] > 0
    assert elapsed < 20                                            # nobody waited for the stalled replies


def test_retry_after_is_honoured_and_holds_every_request():
    calls = {"n": 0}
    lock = threading.Lock()
    seen: list[float] = []

    def responder(body):
        with lock:
            calls["n"] += 1
            seen.append(time.monotonic())
            if calls["n"] == 1:
                return {"status": 429, "content": "slow down", "headers": {"Retry-After": "1"}}
        return None

    with FakeOpenAI(responder=responder, delay=0.05) as fake:
        results, endpoint = call_n(fake, 1)
        first = seen[0]
        call_n(fake, 3, endpoint=endpoint)
    assert results[0].content.startswith("fake answer") and endpoint.stats["retried 429"] == 1
    assert seen[1] - first >= 1.0                                   # the retry waited Retry-After
    assert endpoint.limit.lowest == 2                               # 4 -> 2 on the 429


def test_a_retry_after_longer_than_the_limit_stops_the_run():
    with FakeOpenAI(responder=lambda b: {"status": 429, "content": "daily quota used",
                                         "headers": {"Retry-After": "86400"}}) as fake:
        (result,), _ = call_n(fake, 1)
    assert isinstance(result, EndpointFatal) and "asks to wait 86400 s" in str(result)
    assert fake.request_count == 1


class FixedLimit(AdaptiveLimit):
    """The limiter without its adaptive part: what a plain semaphore does."""

    async def release(self, generation: int, outcome: str) -> None:
        await super().release(generation, "error")


def test_429s_shrink_the_in_flight_limit_so_the_endpoint_is_not_hammered():
    # The endpoint serves at most 2 requests at a time and answers 429 (no Retry-After) beyond that.
    def run(limit_class):
        state = {"now": 0, "rejected": 0}
        lock = threading.Lock()

        def responder(body):
            with lock:
                if state["now"] >= 2:
                    state["rejected"] += 1
                    return {"status": 429, "content": "too many requests in flight"}
                state["now"] += 1
            time.sleep(0.05)
            with lock:
                state["now"] -= 1
            return None

        policy = RetryPolicy(attempts=40, backoff=0.02, max_backoff=0.2)
        endpoint = Endpoint("fake", 8, policy)
        endpoint.limit = limit_class(8)
        with FakeOpenAI(responder=responder) as fake:
            results, _ = call_n(fake, 40, endpoint=endpoint)
        assert all(not isinstance(r, Exception) for r in results)
        return state["rejected"], endpoint

    adaptive, endpoint = run(AdaptiveLimit)
    fixed, _ = run(FixedLimit)
    print(f"\nAIMD: 40 calls against 2 slots, 8 allowed in flight: {adaptive} rejected with 429 "
          f"(limit lowest {endpoint.limit.lowest}, final {endpoint.limit.limit}/8); "
          f"a fixed limit of 8: {fixed} rejected")
    assert endpoint.limit.lowest <= 2
    assert adaptive * 2 < fixed


def test_wrong_key_and_unknown_model_stop_the_run_with_one_line_and_no_key():
    def responder(body):
        return {"status": 401, "content": f"Incorrect API key provided: {KEY}"}
    with FakeOpenAI(responder=responder) as fake:
        (result,), _ = call_n(fake, 1)
    assert isinstance(result, EndpointFatal) and "refused the API key (401" in str(result)
    assert KEY not in str(result) and "\n" not in str(result)
    assert fake.request_count == 1                                  # not retried
    with FakeOpenAI(responder=lambda b: {"status": 404, "content": "model 'nope' not found"}) as fake:
        (result,), _ = call_n(fake, 1)
    assert isinstance(result, EndpointFatal) and "model 'nope' not found" in str(result) and "404" in str(result)


def test_context_too_long_fails_the_request_without_retrying():
    message = "This model's maximum context length is 2048 tokens. However, you requested 9000 tokens."
    with FakeOpenAI(responder=lambda b: {"status": 400, "content": message}) as fake:
        (result,), _ = call_n(fake, 1)
    assert isinstance(result, RequestRejected) and fake.request_count == 1
    assert str(result).startswith("prompt too long for the model's context window (400: This model's maximum")


def test_an_endpoint_that_stays_down_fails_a_few_requests_then_stops_the_run():
    policy = RetryPolicy(attempts=3, backoff=0.01, give_up_after=3)
    with FakeOpenAI(faults={"500": 1.0}) as fake:
        results, endpoint = call_n(fake, 5, policy, concurrency=1)
    # the requests may finish in any order: the first two to spend their retries are reported, the third
    # declares the endpoint down, and the rest are refused at once
    kinds = collections.Counter(type(r) for r in results)
    assert kinds == {EndpointUnavailable: 2, EndpointFatal: 3}
    assert all("looks down" in str(r) for r in results if isinstance(r, EndpointFatal))
    assert all("still failing after 3 attempts" in str(r) for r in results if isinstance(r, EndpointUnavailable))


def test_connection_refused_is_retried_then_reported_in_one_line():
    with FakeOpenAI() as fake:
        url = fake.base_url
    gone = FakeOpenAI()
    gone.base_url = url                                            # nothing listens there any more
    (result,), endpoint = call_n(gone, 1, RetryPolicy(attempts=3, backoff=0.01))
    assert isinstance(result, EndpointUnavailable) and "cannot connect" in str(result)
    assert endpoint.stats["retried connection"] == 2


# ---------------------------------------------------------------- replies that are no completion

def run_llm(fake: FakeOpenAI, requests: int, wire: bool, retries: int = 2):
    """`requests` structured calls through an LLM as a run builds it (make_llm: the Wire) or through
    the SDK's post (wire=False); returns what each call gave (value or exception) and its Usage."""
    from teachgraph.client.llm import LLM, Usage
    from teachgraph.runner import Settings, make_llm
    from teachgraph.client.transport import async_http_client
    from tests.test_llm import Pick

    async def main():
        settings = Settings(skill="rag", seeds=[], out="unused", model="fake-model", structured="json_schema",
                            concurrency=1, retries=retries, timeout=5)
        if wire:
            llm = make_llm(settings, fake.base_url, KEY, embedded=False)
            assert llm.wire is not None
        else:
            chat = ChatOpenAI(base_url=fake.base_url, api_key=KEY, model="fake-model", max_retries=0,
                              http_async_client=async_http_client())
            llm = LLM(chat=chat, model_name="fake-model", endpoint=Endpoint(
                fake.base_url, 1, RetryPolicy(attempts=retries, timeout=5, backoff=0.01), secrets=[KEY]))
        outcomes = []
        for _ in range(requests):
            used = Usage()
            try:
                outcomes.append(((await llm.structured("system", "user", Pick, used=used))[0], used))
            except Exception as exc:  # noqa: BLE001 - the test looks at what came out
                outcomes.append((exc, used))
        await llm.aclose()
        return outcomes
    return asyncio.run(main())


@pytest.mark.parametrize("wire", [True, False], ids=["wire", "sdk"])
@pytest.mark.parametrize("kind", ["choices-empty", "choices-null", "no-message", "error-200"])
def test_a_reply_that_is_no_completion_is_an_endpoint_error_with_its_calls_counted(kind, wire):
    with FakeOpenAI(faults={kind: 1.0}) as fake:
        outcomes = run_llm(fake, 3, wire)
        sent = fake.request_count
    errors = [type(exc) for exc, _ in outcomes]
    # retried like a garbled reply, then the seed fails; 3 requests in a row: the endpoint is down
    assert errors == [EndpointUnavailable, EndpointUnavailable, EndpointFatal], outcomes
    assert all("not a chat completion" in str(exc) for exc, _ in outcomes)
    assert [used.calls for _, used in outcomes] == [2, 2, 2] and sent == 6   # every answered attempt counts


def test_negative_usage_tokens_count_as_zero():
    def responder(body):
        return {"body": {"id": "c", "object": "chat.completion", "created": 0, "model": "fake-model",
                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": '{"name": "alpha", "score": 3}'}}],
                         "usage": {"prompt_tokens": -5000, "completion_tokens": -7, "total_tokens": -5007}}}
    with FakeOpenAI(responder=responder) as fake:
        for wire in (True, False):
            [(value, used)] = run_llm(fake, 1, wire)
            assert value.name == "alpha" and (used.calls, used.tokens) == (1, 0)


@pytest.mark.parametrize("wire", [True, False], ids=["wire", "sdk"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_of_a_model_call_stops_the_run_naming_the_new_location(status, wire):
    with FakeOpenAI() as fake:
        moved = fake.base_url + "/moved/chat/completions"   # where a GET would 404 and a POST would work
        fake.responder = lambda body: {"status": status, "headers": {"Location": moved}, "body": ""}
        [(exc, used)] = run_llm(fake, 1, wire)
        sent = [path for path, _ in fake.request_lines]
    assert isinstance(exc, EndpointFatal), exc
    assert f"redirects model calls ({status}) to {moved}; use that address as --base-url" in str(exc)
    assert sent == ["/v1/chat/completions"]                     # not followed, as a GET or otherwise
