"""The API key never reaches checkpoints, run databases, outputs, logs or messages, even when the
endpoint quotes it back in its errors."""

from __future__ import annotations

import threading

from tests.conftest import SAMPLE, run_cli
from tests.fake_openai import FakeOpenAI
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
        if agent_of(system) == "answer" and "comparison" in body["messages"][1]["content"]:
            return {"status": 400, "content": quoted}
        return self.http_responder(body)


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
