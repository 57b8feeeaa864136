"""The LLM response cache: a repeated request costs no call, any change to the request misses,
`--no-cache` turns it off, cached replies are counted apart from LLM calls, and the API key is
never part of what is stored."""

from __future__ import annotations

import asyncio
import json
import shutil

import openai
import pytest
from langchain_openai import ChatOpenAI

from teachgraph.checkpoints.cache import ResponseCache
from teachgraph.client.chat_call import ChatRequest
from teachgraph.client.llm import LLM, UnusableOutput, Usage
from tests.conftest import SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript
from tests.test_llm import Pick

SECRET = "sk-test-never-store-me-42"


def chat_for(fake, **params) -> ChatOpenAI:
    # its own client: the default one is shared between instances and bound to the first event loop
    return ChatOpenAI(**{"base_url": fake.base_url, "api_key": SECRET, "model": "fake-model", "max_retries": 0,
                         "temperature": 0.7, "http_async_client": openai.DefaultAsyncHttpxClient(), **params})


async def ask(llm: LLM, system: str = "system", user: str = "user", schema=Pick, max_tokens: int | None = None):
    return await llm.structured(system, user, schema, max_tokens=max_tokens)


def reply(body: dict) -> str:
    return json.dumps({"name": "alpha", "score": 3})


def test_a_repeated_request_is_served_from_the_cache_and_counted_apart(tmp_path):
    async def main(fake):
        llm = LLM(chat=chat_for(fake), model_name="fake-model", cache=ResponseCache(tmp_path / "cache.db"))
        first, used_first = await ask(llm)
        second, used_second = await ask(llm)
        assert first == second == Pick(name="alpha", score=3)
        assert fake.request_count == 1                                  # the second one never went out
        assert (used_first.calls, used_first.cache_hits) == (1, 0) and used_first.tokens > 0
        assert used_second == Usage(calls=0, tokens=0, cache_hits=1)   # not an LLM call, no tokens
        assert (llm.usage.calls, llm.usage.cache_hits) == (1, 1)
        # another process (a resumed run) sees the same entry
        again = LLM(chat=chat_for(fake), model_name="fake-model", cache=ResponseCache(tmp_path / "cache.db"))
        assert (await ask(again))[1].cache_hits == 1 and fake.request_count == 1

    with FakeOpenAI(responder=reply) as fake:
        asyncio.run(main(fake))


def test_any_change_to_the_request_misses(tmp_path):
    class Other(Pick):  # another schema: another response_format on the wire
        pass

    async def main(fake, elsewhere):
        cache = ResponseCache(tmp_path / "cache.db")

        def llm(chat=None, **kwargs):
            return LLM(chat=chat or chat_for(fake), model_name="m", cache=cache, **kwargs)

        await ask(llm())
        variants = [
            lambda: ask(llm(), system="another system prompt"),
            lambda: ask(llm(), user="another user message"),
            lambda: ask(llm(chat_for(fake, model="other-model"))),
            lambda: ask(llm(chat_for(fake, temperature=0.2))),
            lambda: ask(llm(chat_for(fake, top_p=0.5))),
            lambda: ask(llm(), max_tokens=99),
            lambda: ask(llm(), schema=Other),
            lambda: ask(llm(structured_mode="json_object")),
            lambda: ask(llm(token_param="max_completion_tokens")),
        ]
        for number, variant in enumerate(variants, start=2):
            await variant()
            assert fake.request_count == number, f"variant {number - 1} was served from the cache"
        await ask(llm(chat_for(elsewhere)))                             # same request, another endpoint
        assert elsewhere.request_count == 1
        for variant in variants:                                        # each is now cached in turn
            await variant()
        assert fake.request_count == len(variants) + 1
        assert len(cache) == len(variants) + 2

    with FakeOpenAI(responder=reply) as fake, FakeOpenAI(responder=reply) as elsewhere:
        asyncio.run(main(fake, elsewhere))


def test_the_key_and_the_stored_data_never_hold_the_api_key(tmp_path):
    async def main(fake):
        cache = ResponseCache(tmp_path / "cache.db")
        llm = LLM(chat=chat_for(fake), model_name="m", cache=cache)
        await ask(llm)
        request = ChatRequest(llm.chat, [], {"extra_body": {"max_tokens": 5}}).rendered()
        assert SECRET not in json.dumps(request, default=repr)
        assert request["endpoint"].startswith(fake.base_url.rstrip("/"))
        cache.close()

    with FakeOpenAI(responder=reply) as fake:
        asyncio.run(main(fake))
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("cache.db*"))
    assert b"alpha" in stored and SECRET.encode() not in stored


def cli_counts(home, run_id):
    return json.loads(run_cli("runs", "show", run_id, "--json", home=home).stdout)["counts"]


@pytest.mark.slow
def test_cli_reuses_replies_across_runs_and_no_cache_turns_it_off(tmp_path):
    home = tmp_path / "home"
    args = ["--seeds", str(SAMPLE), "--limit", "3", "--rounds", "1", "--model", "fake-model",
            "--structured", "json_schema"]  # no endpoint probe: its requests would count too
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        first = run_cli("graph", "run", "rag", "--run-id", "a", "--base-url", fake.base_url, *args, home=home,
                        env={"OPENAI_API_KEY": SECRET})
        assert first.returncode == 0, first.stderr
        calls = fake.request_count
        assert cli_counts(home, "a")["llm_calls"] == calls > 0 and cli_counts(home, "a")["cache_hits"] == 0

        # Another run id over the same seeds and settings asks the same questions: all cached.
        second = run_cli("graph", "run", "rag", "--run-id", "b", "--base-url", fake.base_url, *args, home=home)
        assert second.returncode == 0, second.stderr
        assert fake.request_count == calls
        counts = cli_counts(home, "b")
        assert counts["llm_calls"] == 0 and counts["cache_hits"] == calls and counts["accepted"] == 3
        assert "cache hits" in run_cli("runs", "show", "b", home=home).stdout
        def samples(run):  # sample id (without the run id) -> messages
            lines = (home / "runs" / run / "samples.jsonl").read_text().splitlines()
            return {json.loads(line)["id"].split(":", 1)[1]: json.loads(line)["messages"] for line in lines}
        assert samples("a") == samples("b")

        third = run_cli("graph", "run", "rag", "--run-id", "c", "--no-cache", "--base-url", fake.base_url, *args,
                        home=home)
        assert third.returncode == 0, third.stderr
        assert fake.request_count == 2 * calls and cli_counts(home, "c")["cache_hits"] == 0
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in home.glob("*.db*"))


@pytest.mark.slow
def test_resume_no_cache_asks_the_model_again(tmp_path):
    home = tmp_path / "home"
    denied = {"on": True}
    script = RagScript()

    def responder(body):
        return {"status": 401, "content": "bad key"} if denied["on"] else script.http_responder(body)

    args = ["--seeds", str(SAMPLE), "--limit", "2", "--rounds", "0", "--model", "fake-model",
            "--structured", "json_schema"]  # no endpoint probe: the 401 must come from a seed's call
    with FakeOpenAI(responder=responder) as fake:
        stopped = run_cli("graph", "run", "rag", "--run-id", "e", "--base-url", fake.base_url, *args, home=home)
        assert stopped.returncode == 2 and cli_counts(home, "e")["pending"] == 2   # a 401 stops the run
        denied["on"] = False
        done = run_cli("graph", "run", "rag", "--run-id", "a", "--base-url", fake.base_url, *args, home=home)
        assert done.returncode == 0, done.stderr                                  # fills the cache
        calls = cli_counts(home, "a")["llm_calls"]
        shutil.copytree(home, tmp_path / "copy")

        before = fake.request_count
        cached = run_cli("graph", "resume", "e", home=home)
        assert cached.returncode == 0, cached.stderr
        assert fake.request_count == before and cli_counts(home, "e")["cache_hits"] == calls

        fresh = run_cli("graph", "resume", "e", "--no-cache", home=tmp_path / "copy")
        assert fresh.returncode == 0, fresh.stderr
        assert fake.request_count == before + calls
        counts = cli_counts(tmp_path / "copy", "e")
        assert counts["llm_calls"] == calls and counts["cache_hits"] == 0


def test_tool_call_replies_are_cached_with_their_calls(tmp_path):
    async def main(fake):
        llm = LLM(chat=chat_for(fake), model_name="m", structured_mode="tools",
                  cache=ResponseCache(tmp_path / "cache.db"))
        first = await ask(llm)
        second = await ask(llm)
        return first, second

    with FakeOpenAI() as fake:   # a forced tool call gets arguments made from the function's schema
        (first, used_first), (second, used_second) = asyncio.run(main(fake))
        assert first == second and isinstance(first, Pick)
        assert fake.request_count == 1 and used_first.calls == 1 and used_second.cache_hits == 1


def test_a_cache_file_from_before_tool_calls_is_upgraded(tmp_path):
    import sqlite3
    from langchain_core.messages import AIMessage
    with sqlite3.connect(tmp_path / "cache.db") as old:
        old.execute("""create table replies (key text primary key, content text not null, finish_reason text,
                       model text, tokens integer not null default 0, created real not null) without rowid""")
        old.execute("insert into replies values ('k', '\"old text\"', 'stop', 'm', 3, 0)")
    cache = ResponseCache(tmp_path / "cache.db")
    assert cache.get("k").content == "old text" and cache.get("k").tool_calls == []
    cache.put("t", AIMessage("", tool_calls=[{"name": "Pick", "args": {"name": "abc"}, "id": "c1"}]))
    assert cache.get("t").tool_calls[0]["args"] == {"name": "abc"}


def completion(content, finish_reason="stop") -> dict:
    return {"body": {"id": "c", "object": "chat.completion", "created": 0, "model": "fake-model",
                     "choices": [{"index": 0, "finish_reason": finish_reason,
                                  "message": {"role": "assistant", "content": content}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}}


@pytest.mark.parametrize("bad", [
    completion('{"name": "alpha", "sco'),                            # malformed JSON
    completion('{"name": "alpha", "score": 3}', "length"),          # truncated: finish_reason=length
    completion(None),                                                # content null
], ids=["malformed", "truncated", "content-null"])
def test_only_replies_that_were_used_are_cached(tmp_path, bad):
    """A broken endpoint's replies are never served later: the healthy endpoint on the same URL is asked."""
    async def main(fake):
        cache = ResponseCache(tmp_path / "cache.db")
        fake.responder = lambda body: bad
        broken = LLM(chat=chat_for(fake), model_name="fake-model", cache=cache)
        with pytest.raises(UnusableOutput):
            await ask(broken)
        assert fake.request_count == 3 and len(cache) == 0          # the first reply and 2 corrections
        fake.responder = reply
        healthy = LLM(chat=chat_for(fake), model_name="fake-model", cache=cache)
        value, used = await ask(healthy)
        assert value == Pick(name="alpha", score=3) and (used.calls, used.cache_hits) == (1, 0)
        assert fake.request_count == 4 and len(cache) == 1          # this one was used: cached
        assert (await ask(healthy))[1].cache_hits == 1

    with FakeOpenAI() as fake:
        asyncio.run(main(fake))


def test_a_bad_reply_stored_by_an_older_version_is_not_served(tmp_path):
    async def main(fake):
        cache = ResponseCache(tmp_path / "cache.db")
        llm = LLM(chat=chat_for(fake), model_name="fake-model", cache=cache)
        await ask(llm)
        cache.conn.execute("""update replies set content = '"{\\"name\\": \\"al"'""")   # as the old code stored
        value, used = await ask(llm)
        assert value == Pick(name="alpha", score=3) and (used.calls, used.cache_hits) == (1, 1)
        assert fake.request_count == 2 and len(cache) == 1
        assert (await ask(llm))[1].cache_hits == 1 and fake.request_count == 2   # the good one replaced it

    with FakeOpenAI(responder=reply) as fake:
        asyncio.run(main(fake))


def test_a_huge_reply_is_used_but_not_cached(tmp_path):
    from teachgraph.checkpoints.cache import MAX_STORED_CHARS
    padded = json.dumps({"name": "alpha", "score": 3}) + " " * (2 * MAX_STORED_CHARS)

    async def main(fake):
        cache = ResponseCache(tmp_path / "cache.db")
        llm = LLM(chat=chat_for(fake), model_name="fake-model", cache=cache)
        value, used = await ask(llm)
        assert value == Pick(name="alpha", score=3) and used.calls == 1
        assert len(cache) == 0
        await ask(LLM(chat=chat_for(fake, temperature=0.1), model_name="fake-model", cache=cache))
        assert len(cache) == 0

    with FakeOpenAI(responder=lambda body: padded) as fake:
        asyncio.run(main(fake))
    assert sum(p.stat().st_size for p in tmp_path.glob("cache.db*")) < MAX_STORED_CHARS
