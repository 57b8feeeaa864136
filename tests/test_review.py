"""The review page's store, API and export, and `graph show`'s labels (fast: a scripted model, the server
in a thread). The browser tests are tests/test_review_browser.py."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from teachgraph import export, skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.errors import TeachgraphError
from teachgraph.review import data, diagram
from teachgraph.review.server import open_server
from teachgraph.runner import Home
from typer.testing import CliRunner

from teachgraph import cli
from tests.review_run import RUN_ID, make_run


def run_cli(home, *args: str):
    """The CLI in this process (a subprocess pays ~3 s of imports per call)."""
    return CliRunner().invoke(cli.app, list(args), env={"TEACHGRAPH_HOME": str(home), "COLUMNS": "200"})


@pytest.fixture
def made(tmp_path):
    return make_run(tmp_path)


class Served:
    def __init__(self, home):
        self.server = open_server(RUN_ID, home=Home(home))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def request(self, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | bytes]:
        request = urllib.request.Request(self.server.url.rstrip("/") + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        return status, json.loads(raw) if kind.startswith("application/json") else raw

    def verdict(self, sample_id: str, payload, content_type: str = "application/json"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request(f"/api/samples/{urllib.parse.quote(sample_id)}/verdict", body,
                            {"Content-Type": content_type})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def served(made):
    server = Served(made[1])
    yield server
    server.close()


def first_sample(registry: Registry) -> str:
    return next(registry.samples(RUN_ID))[0]


def test_steps_add_up_to_the_seeds_and_say_where_seeds_ended(made):
    registry, _ = made
    figures = {row["node"]: row for row in registry.node_figures(RUN_ID)}
    counts = registry.counts(RUN_ID)
    assert sum(f["llm_calls"] for f in figures.values()) == counts["llm_calls"]
    assert sum(f["tokens"] for f in figures.values()) == counts["tokens"]
    assert figures["transform"]["runs"] == 5 and figures["answer"]["runs"] == 3
    assert figures["generate"]["rejected"] == 1 and figures["generate"]["failed"] == 1
    rejected = next(registry.db.query("select id from seeds where status = 'rejected'"))["id"]
    assert [s["node"] for s in registry.steps(RUN_ID, rejected)] == ["transform", "generate"]
    assert registry.steps(RUN_ID, rejected)[-1]["detail"]["rejected"].startswith("Query:")
    # the router's choice is recorded: every accepted seed went generate -> suggest
    taken = {(e["node"], e["next"]): e["taken"] for e in registry.edge_figures(RUN_ID)}
    assert taken[("generate", "suggest")] == 3 and taken[("generate", "__end__")] == 1


def test_lineage_has_every_step_with_what_it_made_and_spent(made):
    registry, _ = made
    sample_id = first_sample(registry)
    item = data.lineage(registry, RUN_ID, sample_id)
    assert [s["node"] for s in item["steps"]] == ["transform", "generate", "suggest", "edit", "answer", "gate"]
    generate, suggest, edit = item["steps"][1:4]
    assert generate["detail"]["item"]["query"].startswith("Which behaviour")
    assert suggest["detail"]["operation"] == "rewrite_query" and edit["detail"]["item"]["round"] == 1
    assert all(s["llm_calls"] >= 1 and s["tokens"] > 0 for s in item["steps"] if s["node"] != "gate")
    assert item["steps"][-1]["llm_calls"] == 0                       # the gates ask no model
    assert sample_id in item["steps"][-2]["detail"]["samples"]
    assert item["seed"]["text"] and item["sample"]["messages"][-1]["role"] == "assistant"
    assert data.lineage(registry, RUN_ID, "rv:nope:r0") is None
    failed = next(i for i in data.items(registry, RUN_ID, status="failed")["items"])
    assert "the model fell over" in failed["why"]
    assert data.lineage(registry, RUN_ID, failed["id"])["steps"][-1]["outcome"] == "failed"


def test_items_filter_by_status_task_type_verdict_and_text(made):
    registry, _ = made
    every = data.items(registry, RUN_ID)
    assert every["total"] == 6 + 2          # six samples, and the rejected and the failed seed
    assert {i["status"] for i in every["items"]} == {"accepted", "rejected", "failed"}
    assert data.items(registry, RUN_ID, status="rejected")["total"] == 1
    some_type = every["items"][0]["task_type"]
    typed = data.items(registry, RUN_ID, task_type=some_type)["items"]
    assert typed and all(i["task_type"] == some_type for i in typed)
    assert data.items(registry, RUN_ID, q="HARDER: which documented")["total"] == 3   # the refined samples
    assert data.items(registry, RUN_ID, q="fell over")["total"] == 1
    sample_id = first_sample(registry)
    data.set_verdict(registry, RUN_ID, sample_id, {"verdict": "rejected", "note": "vague"})
    assert [i["id"] for i in data.items(registry, RUN_ID, verdict="rejected")["items"]] == [sample_id]
    assert data.items(registry, RUN_ID, verdict="none")["total"] == every["total"] - 1


def test_verdict_api_answers_200_and_one_line_400s(served, made):
    registry, _ = made
    sample_id = first_sample(registry)
    status, body = served.verdict(sample_id, {"verdict": "rejected", "note": "the answer cites nothing"})
    assert status == 200 and body["verdict"] == "rejected"
    for payload, words in [({"verdict": "meh"}, "verdict must be"), ({"verdict": "accepted", "note": 3}, "note must"),
                           ({"verdict": "accepted", "score": 1}, "unknown field"), ([1], "JSON object"),
                           (b"{not json", "not JSON"), ({"note": "x" * 3000, "verdict": "accepted"}, "at most")]:
        status, body = served.verdict(sample_id, payload)
        assert status == 400 and words in body["error"] and "\n" not in body["error"], (payload, body)
    assert served.verdict("rv:nope:r0", {"verdict": "accepted"})[0] == 404
    assert served.verdict(sample_id, b"verdict=accepted", "application/x-www-form-urlencoded")[0] == 415
    # the bad requests changed nothing
    assert Registry(made[1] / "runs.db").reviews(RUN_ID)[sample_id]["note"] == "the answer cites nothing"


def test_the_server_answers_only_its_own_host(served):
    assert served.request("/api/run")[0] == 200
    status, body = served.request("/api/run", headers={"Host": "evil.example:80"})
    assert status == 403 and "not this server" in body["error"]


def test_pages_and_api_serve_the_run(served, made):
    status, page = served.request("/")
    assert status == 200 and b"/static/app.js" in page and b"http" not in page.replace(b'lang="en"', b"")
    assert served.request("/static/app.js")[0] == 200 and served.request("/static/../server.py")[0] == 404
    status, run = served.request("/api/run")
    assert run["counts"]["accepted"] == 3 and run["skills"] == ["rag"] and run["status"] == "finished with failures"
    status, svg = served.request("/api/graph/rag.svg")
    assert status == 200 and b'id="node&#45;generate"' in svg and b"5 runs" in svg and b"max_rounds &gt; 0" in svg
    assert served.request("/api/graph/coding.svg")[0] == 404
    status, node = served.request("/api/nodes/rag/generate")
    assert node["draws_from"].startswith("taxonomy") and "single_passage_fact" in {i["name"] for i in node["items"]}
    assert "You write one query" in node["prompts"]["generate"]["user"]   # after the passages: a shared prefix


def test_a_verdict_survives_a_restart_shows_in_runs_show_and_leaves_the_export(made, tmp_path):
    registry, home = made
    sample_id = first_sample(registry)
    first = Served(home)
    assert first.verdict(sample_id, {"verdict": "rejected", "note": "wrong"})[0] == 200
    other = list(registry.samples(RUN_ID))[1][0]
    assert first.verdict(other, {"verdict": "accepted"})[0] == 200
    first.close()
    again = Served(home)
    try:
        status, item = again.request(f"/api/samples/{urllib.parse.quote(sample_id)}")
        assert item["review"]["verdict"] == "rejected" and item["review"]["note"] == "wrong"
    finally:
        again.close()
    result = export.export(Registry(home / "runs.db"), [RUN_ID], tmp_path / "out", format="jsonl")
    written = [json.loads(line)["id"] for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert sample_id not in written and other in written and len(written) == 5
    assert result.dropped == {"review reviewer": 1}
    kept_all = export.export(Registry(home / "runs.db"), [RUN_ID], tmp_path / "all", format="jsonl",
                             include_rejected=True)
    assert kept_all.rows == 6
    shown = json.loads(run_cli(home, "runs", "show", RUN_ID, "--json").stdout)
    assert shown["reviews"] == {"accepted": 1, "rejected": 1}
    assert "reviewed 1 accepted, 1 rejected" in run_cli(home, "runs", "show", RUN_ID).stdout


def test_every_routed_edge_has_its_condition_in_words():
    for name in skills.available():
        drawn = diagram.diagram(skills.load(name))
        routed = [e for e in drawn.edges if e.condition is not None]
        assert routed and all("->" not in e.condition for e in routed), (name, [e.condition for e in routed])
    rag = {(e.source, e.target): e.condition for e in diagram.diagram(skills.load("rag")).edges}
    assert rag[("suggest", "edit")] == "suggester has an edit" and rag[("edit", "suggest")] == "round < max_rounds"


def test_graph_show_labels_and_run_figures(made):
    registry, home = made
    mermaid = run_cli(home, "graph", "show", "rag", "--run", RUN_ID)
    assert mermaid.exit_code == 0, mermaid.output
    assert 'suggest -. "suggester has an edit (3×)" .-> edit' in mermaid.stdout
    assert "seed instruction agent<br/><i>5 runs · 6 calls" in mermaid.stdout
    ascii_art = run_cli(home, "graph", "show", "rag", "--format", "ascii", "--run", RUN_ID)
    assert "generate -> __end__  when rejected (1×)" in ascii_art.stdout and "1 rejected · 1 failed" in ascii_art.stdout
    missing = run_cli(home, "graph", "show", "rag", "--run", "nope")
    assert missing.exit_code == 2 and "no run 'nope'" in missing.output


def test_review_command_prints_its_url_and_serves_the_run(made):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    _, home = made
    env = {**os.environ, "TEACHGRAPH_HOME": str(home)}
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "review", RUN_ID, "--port", "0"], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"review of run {RUN_ID}: http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split(": ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "api/run", timeout=10) as response:
            assert json.loads(response.read())["run"] == RUN_ID
    finally:
        process.terminate()
        process.wait(10)
    missing = run_cli(home, "review", "nope").exception   # main() prints it as one line, exit code 2
    assert isinstance(missing, TeachgraphError) and missing.exit_code == 2 and str(missing).startswith("no run 'nope'")
