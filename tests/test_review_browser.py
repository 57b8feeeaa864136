"""The review page end to end in a real headless browser: Debian's chromium driven by Playwright (no
browser is downloaded). Screenshots are kept under the test's tmp path (pytest keeps the last runs'),
or under TEACHGRAPH_TEST_ARTEFACTS when it is set."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from teachgraph import export
from teachgraph.checkpoints.registry import Registry
from teachgraph.review.server import open_server
from teachgraph.runner import Home, RunLock
from tests.review_run import RUN_ID, make_run

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)


def loaded(page, query: str) -> None:
    """Wait until the samples list shows the filter `query` (the page's CSP forbids wait_for_function's eval)."""
    expect(page.locator("body")).to_have_attribute("data-loaded", query)


class Served:
    def __init__(self, home: Path):
        self.server = open_server(RUN_ID, home=Home(home))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def made(tmp_path):
    return make_run(tmp_path)   # before the browser: Playwright's sync API holds this thread's event loop


@pytest.fixture
def browser(tmp_path, made):
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"], viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def shots(tmp_path, request):
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    keep = os.environ.get("TEACHGRAPH_TEST_ARTEFACTS")
    if keep:
        shutil.copytree(folder, Path(keep) / request.node.name, dirs_exist_ok=True)


def test_the_run_page_draws_the_graph_with_figures_and_refreshes_while_running(made, browser, shots):
    registry, home = made
    figures = {row["node"]: row for row in registry.node_figures(RUN_ID)}
    # the run is "still going": its lock is held and its status is running
    registry.set_run(RUN_ID, status="running")
    served = Served(home)
    errors: list[str] = []
    try:
        with RunLock(Home(home), RUN_ID):
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(served.url)
            page.wait_for_selector("#graphs svg g.node")
            names = page.eval_on_selector_all("#graphs g.node title", "ts => ts.map(t => t.textContent)")
            assert {"transform", "generate", "suggest", "edit", "answer"} <= set(names)
            generate = page.locator("#graphs g.node", has=page.locator("title", has_text="generate")).first
            text = generate.text_content()
            assert f"{figures['generate']['runs']} runs" in text and f"{figures['generate']['llm_calls']} calls" in text
            assert "1 rejected" in text and "1 failed" in text
            edges = " ".join(page.eval_on_selector_all("#graphs g.edge text", "ts => ts.map(t => t.textContent)"))
            assert "suggester has an edit (3×)" in edges and "max_rounds > 0" in edges
            assert page.text_content("#live") == "live: refreshing"
            assert "3 accepted" in page.text_content("#figures")
            page.screenshot(path=str(shots / "run.png"), full_page=True)
            # a node ends while the page is open: its figures refresh without a reload
            registry.record_step({"run_id": RUN_ID, "seed_id": "late", "skill": "rag", "node": "generate",
                                  "outcome": "ok", "next": "suggest", "llm_calls": 1, "tokens": 15,
                                  "cache_hits": 0, "seconds": 0.5, "detail": "{}", "at": 0.0})
            expect(page.locator("#graphs")).to_contain_text("6 runs · 7 calls")
            # clicking a node shows its prompt and the taxonomy it draws from
            page.locator("#graphs g.node", has=page.locator("title", has_text="generate")).first.click()
            page.wait_for_selector("#node-panel:not([hidden])")
            assert "You write one query" in page.text_content("#node-prompts")
            assert "taxonomy" in page.text_content("#node-draws")
            assert "single_passage_fact" in page.text_content("#node-items")
            page.screenshot(path=str(shots / "node.png"), full_page=True)
        registry.set_run(RUN_ID, status="finished with failures")
    finally:
        served.close()
    assert not errors, errors
    assert (shots / "run.png").read_bytes()[:4] == b"\x89PNG"


def test_samples_filter_open_a_lineage_and_a_verdict_persists_and_changes_the_export(tmp_path, made, browser,
                                                                                     shots):
    registry, home = made
    served = Served(home)
    try:
        page = browser.new_page()
        page.goto(served.url + "samples")
        page.wait_for_selector("#items tbody tr")
        assert page.locator("#items tbody tr").count() == 8          # 6 samples, a rejected and a failed seed
        page.select_option("select[name=status]", "failed")
        loaded(page, "status=failed")
        assert page.locator("#items tbody tr").count() == 1
        assert "the model fell over" in page.text_content("#items tbody")
        page.select_option("select[name=status]", "")
        page.fill("input[name=q]", "harder: which documented")
        expect(page.locator("body")).to_have_attribute("data-loaded", re.compile("^q="))
        assert page.locator("#items tbody tr").count() == 3
        page.fill("input[name=q]", "")
        loaded(page, "")
        page.select_option("select[name=status]", "accepted")
        loaded(page, "status=accepted")
        assert page.locator("#items tbody tr").count() == 6
        # a refined sample's lineage, step by step
        row = page.locator("#items tbody tr", has_text="Harder").first
        sample_id = row.get_attribute("data-id")
        row.click()
        page.wait_for_selector("#lineage:not([hidden]) #steps li")
        nodes = page.eval_on_selector_all("#steps li", "ls => ls.map(l => l.dataset.node)")
        assert nodes[:6] == ["seed", "transform", "generate", "suggest", "edit", "answer"], nodes
        steps = page.text_content("#steps")
        assert "suggestion (rewrite_query)" in steps and "edited instruction (round 1)" in steps
        assert "1 calls · 15 tokens" in steps and "According to the documents" in steps
        page.fill("#note", "the answer cites no passage")
        page.click("#reject")
        expect(page.locator("#verdict-state")).to_contain_text("saved")
        page.screenshot(path=str(shots / "lineage.png"), full_page=True)
    finally:
        served.close()
    # a new server on the same store: the verdict is still there
    served = Served(home)
    try:
        page = browser.new_page()
        page.goto(served.url + "samples")
        page.wait_for_selector("#items tbody tr")
        page.select_option("select[name=verdict]", "rejected")
        loaded(page, "verdict=rejected")
        assert page.locator("#items tbody tr").count() == 1
        page.locator("#items tbody tr").first.click()
        expect(page.locator("#verdict-state")).to_have_text("verdict: rejected")
        assert page.input_value("#note") == "the answer cites no passage"
        page.screenshot(path=str(shots / "after-restart.png"), full_page=True)
    finally:
        served.close()
    result = export.export(Registry(home / "runs.db"), [RUN_ID], tmp_path / "out", format="jsonl")
    written = [json.loads(line)["id"] for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert sample_id not in written and len(written) == 5 and result.dropped == {"review reviewer": 1}
