"""Tests for the fake OpenAI server used by the rest of the suite and the benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal, Optional

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from teachgraph.testing.fake_openai import FakeOpenAI, instance_from_schema, parse_faults


class Step(BaseModel):
    title: str = Field(min_length=20)
    minutes: int = Field(ge=5, le=10)


class Lesson(BaseModel):
    kind: Literal["quiz", "essay", "drill"]
    tags: list[str] = Field(min_length=3, max_length=4)
    level: int = Field(ge=3, le=7)
    score: float = Field(gt=10.0, lt=11.0)
    step: Step
    steps: list[Step]
    note: Optional[str] = None
    done: bool = False


def _client(fake: FakeOpenAI, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key="sk-fake", **kw)


def test_instance_from_schema_validates_with_pydantic():
    schema = Lesson.model_json_schema()
    inst = instance_from_schema(schema)
    lesson = Lesson.model_validate(inst)
    assert lesson.kind == "quiz"
    assert 3 <= len(lesson.tags) <= 4 and len(set(lesson.tags)) == len(lesson.tags)
    assert 3 <= lesson.level <= 7 and 5 <= lesson.step.minutes <= 10
    assert len(lesson.step.title) >= 20
    assert set(inst) == set(Lesson.model_fields)  # optional fields are filled too
    # deterministic
    assert instance_from_schema(schema) == inst


def test_recursive_schema_terminates():
    class Node(BaseModel):
        name: str
        children: list["Node"] = []

    Node.model_rebuild()
    Node.model_validate(instance_from_schema(Node.model_json_schema()))


def test_openai_sdk_plain_and_structured():
    with FakeOpenAI() as fake:
        client = _client(fake)
        assert [m.id for m in client.models.list()] == ["fake-model"]

        r = client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hello there"}])
        assert r.model == "m1"
        assert r.choices[0].message.content == "fake answer 1"
        assert r.choices[0].finish_reason == "stop"
        assert r.usage.prompt_tokens == len("hello there") // 4
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

        parsed = client.beta.chat.completions.parse(
            model="m2", messages=[{"role": "user", "content": "make a lesson"}], response_format=Lesson)
        assert isinstance(parsed.choices[0].message.parsed, Lesson)

        r = client.chat.completions.create(model="m3", messages=[{"role": "user", "content": "x"}],
                                           response_format={"type": "json_object"})
        assert r.choices[0].message.content == "{}"

        assert fake.request_count == 3
        assert fake.requests[0]["model"] == "m1"
        fake.reset()
        assert fake.request_count == 0


def test_streaming_and_tool_call():
    with FakeOpenAI() as fake:
        client = _client(fake)
        chunks = list(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "fake answer 1"

        tool = {"type": "function", "function": {"name": "Step", "parameters": Step.model_json_schema()}}
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                           tools=[tool], tool_choice={"type": "function",
                                                                      "function": {"name": "Step"}})
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "Step"
        Step.model_validate_json(call.function.arguments)


def test_429_fault_has_retry_after():
    with FakeOpenAI(faults={"429": 1.0}) as fake:
        with pytest.raises(openai.RateLimitError) as ei:
            _client(fake, max_retries=0).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
        assert ei.value.status_code == 429
        assert ei.value.response.headers["retry-after"] == "1"
        assert ei.value.body["message"] == "rate limited"
        assert fake.injected["429"] == 1


def test_malformed_truncated_and_500_faults():
    schema_rf = {"type": "json_schema", "json_schema": {"name": "Step", "schema": Step.model_json_schema()}}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": schema_rf}
    with FakeOpenAI(faults={"malformed": 1.0}) as fake, httpx.Client() as http:
        content = http.post(f"{fake.base_url}/chat/completions", json=body).json()["choices"][0]["message"]["content"]
        with pytest.raises(ValueError):
            json.loads(content)
    with FakeOpenAI(faults={"truncated": 1.0}) as fake, httpx.Client() as http:
        choice = http.post(f"{fake.base_url}/chat/completions", json=body).json()["choices"][0]
        assert choice["finish_reason"] == "length"
    with FakeOpenAI(faults={"500": 1.0}) as fake, httpx.Client() as http:
        assert http.post(f"{fake.base_url}/chat/completions", json=body).status_code == 500


def test_fault_rates_are_seeded():
    def run():
        with FakeOpenAI(faults={"429": 0.3, "500": 0.2}, seed=7) as fake, httpx.Client() as http:
            codes = [http.post(f"{fake.base_url}/chat/completions",
                               json={"model": "m", "messages": []}).status_code for _ in range(40)]
            return codes, fake.injected
    codes, injected = run()
    assert codes == run()[0]
    assert injected["429"] == codes.count(429) > 0 and injected["500"] == codes.count(500) > 0
    assert parse_faults("429=0.1, 500=0.05") == {"429": 0.1, "500": 0.05}


def test_client_timeout_fault():
    with FakeOpenAI(faults={"timeout": 1.0}) as fake:
        with pytest.raises(openai.APITimeoutError):
            _client(fake, max_retries=0, timeout=0.3).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])


def test_responder_override():
    def responder(body):
        last = body["messages"][-1]["content"]
        if last == "error":
            return {"status": 503, "content": "overloaded", "headers": {"X-Test": "1"}}
        if last == "raw":
            return {"status": 200, "body": "not json at all"}
        if last == "cut":
            return {"content": "partial", "finish_reason": "length"}
        if last == "default":
            return None
        return f"echo: {last}"

    with FakeOpenAI(responder=responder) as fake, httpx.Client() as http:
        client = _client(fake, max_retries=0)

        def ask(text):
            return client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])

        assert ask("ping").choices[0].message.content == "echo: ping"
        r = ask("cut")
        assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("partial", "length")
        assert ask("default").choices[0].message.content == "fake answer 1"
        with pytest.raises(openai.InternalServerError) as ei:
            ask("error")
        assert ei.value.status_code == 503 and ei.value.response.headers["x-test"] == "1"
        raw = http.post(f"{fake.base_url}/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "raw"}]})
        assert raw.status_code == 200 and raw.text == "not json at all"


def test_errors_404_400_and_keepalive():
    with FakeOpenAI() as fake, httpx.Client() as http:
        r = http.get(f"{fake.base_url}/nope")
        assert r.status_code == 404 and "error" in r.json()
        r = http.post(f"{fake.base_url}/chat/completions", content=b"{not json",
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()
        for _ in range(5):  # same keep-alive connection keeps working
            assert http.post(f"{fake.base_url}/chat/completions",
                             json={"model": "m", "messages": []}).status_code == 200
        assert fake.request_count == 5


def test_script_mode_prints_url():
    script = Path(__file__).resolve().parent.parent / "teachgraph" / "testing" / "fake_openai.py"
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--delay", "0.01",
                             "--faults", "500=0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1")
        url = line.removeprefix("listening on ")
        r = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": []}, timeout=5)
        assert r.json()["choices"][0]["message"]["content"] == "fake answer 1"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert proc.stderr.read() == ""
