"""The API key never reaches checkpoints, run databases, outputs, logs or messages, even when the
endpoint quotes it back in its errors."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript, agent_of

SECRET = "sk-proj-TEACHGRAPH-canary-5f3a9c7e1b2d"


def leaks(home, *outputs: str) -> list[str]:
    found = [f"output {i}" for i, text in enumerate(outputs) if SECRET in text]
    for path in sorted(home.rglob("*")):
        if path.is_file() and SECRET.encode() in path.read_bytes():
            found.append(str(path.relative_to(home)))
    return found


class Tattletale(RagScript):
    """An endpoint that quotes the bearer token back in every error it gives: 500s now and then
    (retried), a 400 for every answer of one task type (those seeds fail), and after `revoke`
    a 401 for everything (the run stops)."""

    revoked = False
    count = 0

    def __call__(self, body: dict, token: str):
        self.count += 1
        quoted = f"request with key {token} refused"
        system = body["messages"][0]["content"]
        if self.revoked:
            return {"status": 401, "content": f"Incorrect API key provided: {token}"}
        if self.count % 7 == 0:
            return {"status": 500, "content": quoted}
        user = body["messages"][1]["content"]
        if agent_of(system, user) == "answer" and "comparison" in user:
            return {"status": 400, "content": quoted}
        return self.http_responder(body)


@pytest.mark.slow
def test_the_key_appears_nowhere_even_when_the_endpoint_quotes_it(tmp_path):
    script = Tattletale()
    lock = threading.Lock()
    home = tmp_path / "home"

    with FakeOpenAI() as fake:
        # the fake passes the request body only; the handler knows the token, so read it there
        original = fake._handle_chat

        def handle(h, body):
            token = (h.headers.get("Authorization") or "").removeprefix("Bearer ")
            assert token == SECRET
            with lock:
                fake.responder = lambda b, t=token: script(b, t)
            original(h, body)
        fake._handle_chat = handle

        env = {"OPENAI_API_KEY": SECRET}
        outputs = []
        probed = run_cli("endpoint", "probe", "--base-url", fake.base_url, "--model", "fake-model", home=home, env=env)
        outputs += [probed.stdout, probed.stderr]
        run = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "6", "--rounds", "1", "--run-id", "s",
                      "--base-url", fake.base_url, "--model", "fake-model", "--retries", "3", home=home, env=env)
        outputs += [run.stdout, run.stderr]
        assert run.returncode == 1, run.stderr                     # the 400s failed some seeds
        for args in (["runs", "show", "s"], ["runs", "failures", "s"]):
            shown = run_cli(*args, home=home, env=env)
            outputs += [shown.stdout, shown.stderr]
        assert "request with key *** refused" in outputs[-2]
        script.revoked = True
        resumed = run_cli("graph", "resume", "s", home=home, env=env)
        outputs += [resumed.stdout, resumed.stderr]
        assert resumed.returncode == 2 and "Incorrect API key provided: ***" in resumed.stderr
        retried = run_cli("graph", "run", "rag", "--limit", "1", "--base-url", fake.base_url, "--model", "other",
                          home=home, env=env)                         # the probe meets the 401
        outputs += [retried.stdout, retried.stderr]
        assert retried.returncode == 2 and "refused the API key" in retried.stderr

    assert (home / "checkpoints.db").exists() and (home / "runs" / "s" / "samples.jsonl").exists()
    assert leaks(home, *outputs) == []


@pytest.mark.slow
def test_a_key_with_surrounding_whitespace_is_stripped_and_never_printed(tmp_path):
    """As read from a secret file: a trailing newline (and stray spaces) are no part of the key."""
    home = tmp_path / "home"
    env = {"OPENAI_API_KEY": f"  {SECRET}\n"}
    with FakeOpenAI() as fake:
        probed = run_cli("endpoint", "probe", "--base-url", fake.base_url, "--model", "fake-model", home=home, env=env)
        run = run_cli("graph", "run", "rag", "--limit", "1", "--rounds", "0", "--run-id", "w",
                      "--base-url", fake.base_url, "--model", "fake-model", home=home, env=env)
        sent = {headers.get("authorization") for _, headers in fake.request_lines}
    assert probed.returncode == 0 and "strategy: json_schema" in probed.stdout, probed.stderr
    assert run.returncode == 0, run.stderr
    assert sent == {f"Bearer {SECRET}"}
    assert leaks(home, probed.stdout, probed.stderr, run.stdout, run.stderr) == []


@pytest.mark.parametrize("key, what, commands", [
    ("sk-ключ-0123456789", "non-ASCII", [["endpoint", "probe"], ["graph", "run", "rag", "--limit", "1"]]),
    ("sk-abc\x01def-0123456789", "control", [["endpoint", "probe"]])], ids=["non-ascii", "control"])
def test_a_key_no_header_can_carry_is_one_line_that_does_not_quote_it(tmp_path, key, what, commands):
    with FakeOpenAI() as fake:
        for args in commands:
            result = run_cli(*args, "--base-url", fake.base_url, "--model", "fake-model", home=tmp_path,
                             env={"OPENAI_API_KEY": key})
            assert result.returncode == 2 and f"OPENAI_API_KEY holds {what} characters" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1 and "0123456789" not in result.stderr
        assert fake.request_count == 0
    assert run_cli("runs", "list", home=tmp_path).stdout == ""


def test_a_short_key_is_redacted_too(tmp_path):
    def quoting(body):
        return {"status": 401, "content": "Incorrect API key provided: k3y. You can find your key at ..."}
    with FakeOpenAI(responder=quoting) as fake:
        result = run_cli("endpoint", "probe", "--base-url", fake.base_url, "--model", "fake-model", home=tmp_path,
                         env={"OPENAI_API_KEY": "k3y"})
    assert result.returncode == 2 and "Incorrect API key provided: ***. You can find your key" in result.stderr
    assert "k3y" not in result.stderr


@pytest.mark.slow
def test_credentials_in_the_base_url_are_refused_and_never_stored_or_printed(tmp_path):
    home = tmp_path / "home"
    with FakeOpenAI() as fake:
        with_credentials = fake.base_url.replace("http://", "http://alice:pa55-canary-word@")
        outputs = []
        for args in (["endpoint", "probe"], ["graph", "run", "rag", "--limit", "1", "--run-id", "u"]):
            result = run_cli(*args, "--base-url", with_credentials, "--model", "fake-model", home=home)
            assert result.returncode == 2, result.stderr
            assert f"--base-url {fake.base_url} must not carry credentials" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            outputs += [result.stdout, result.stderr]
        assert fake.request_count == 0
    assert run_cli("runs", "list", home=home).stdout == ""
    assert not any(text for text in outputs if "pa55-canary-word" in text or "alice" in text)
    stored = [p for p in home.rglob("*") if p.is_file() and b"pa55-canary-word" in p.read_bytes()]
    assert stored == []
