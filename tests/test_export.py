"""`export`: a multi-skill run (text skills, conversation, tool use) made with the schema-driven fake
model, exported in every format and loaded back with `datasets`; the card's YAML and counts; several
runs; rejected samples; SmolLM2's chat template (built offline from the embedded GGUF) renders the rows;
--push against a local fake of the Hub's upload API, with HF_TOKEN never shown or stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets", reason="the export extra is not installed")
yaml = pytest.importorskip("yaml")

from teachgraph import skills  # noqa: E402
from teachgraph.checkpoints.registry import Registry  # noqa: E402
from teachgraph.client.llm import LLM  # noqa: E402
from teachgraph import export  # noqa: E402
from teachgraph.mix import Dealer  # noqa: E402
from teachgraph.runner import LocalExecutor, Home, Settings  # noqa: E402
from teachgraph.seeds import collect  # noqa: E402
from tests.conftest import Tally, run_cli  # noqa: E402
from tests.fake_hub import FakeHub  # noqa: E402
from tests.flow_script import FlowScript, SchemaChatModel  # noqa: E402

MIX = {"conversation": 1.0, "tool_use": 1.0, "mcq": 1.0, "open_domain_qa": 1.0, "text_modification": 1.0}
SECOND = {"text_classification": 1.0, "mcq": 1.0}


@pytest.fixture(autouse=True)
def own_datasets_cache(tmp_path, monkeypatch):
    """load_dataset caches what it prepared: each test gets its own cache, never ~/.cache's."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def run_mix(home: Home, run_id: str, weights: dict[str, float], corpus: Path) -> Registry:
    registry = Registry(home.registry_path)
    settings = Settings(skill="all", seeds=[str(corpus)], out=str(home.default_out(run_id)), rounds=1,
                        concurrency=2, model="fake", mix=weights)
    registry.create_run(run_id, "all", settings.to_json())
    registry.add_corpus(run_id, collect([corpus]), limit=None, passage_chars=420,
                        assign=Dealer([skills.load(name) for name in weights], weights))
    llm = LLM(chat=SchemaChatModel(script=FlowScript()), model_name="fake", structured_mode="json_object")
    asyncio.run(LocalExecutor(registry, home, run_id, None, llm, settings, Tally()).run())
    return registry


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two runs in one home: `mixed` (5 skills, 2 seeds each) and `second` (2 skills, 5 seeds each)."""
    root = tmp_path_factory.mktemp("export")
    corpus = root / "corpus"
    corpus.mkdir()
    for n in range(10):
        (corpus / f"doc{n}.md").write_text(f"# Weather in Paris {n}\n\n" + "Paris has mild weather; rain falls "
                                           "on about 110 days a year and summers average 25 degrees. " * 6)
    home = Home(root / "home")
    run_mix(home, "mixed", MIX, corpus)
    run_mix(home, "second", SECOND, corpus)
    return home, Registry(home.registry_path), root


def samples_of(registry: Registry, run_id: str) -> list[dict]:
    return [json.loads(body) for _, body in registry.samples(run_id)]


def samples_by_skill(registry: Registry, *run_ids: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run_id in run_ids:
        for sample in samples_of(registry, run_id):
            out.setdefault(sample["skill"], []).append(sample)
    return out


def without_nulls(message: dict) -> dict:
    return {k: v for k, v in message.items() if v is not None}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_run_covers_text_conversation_and_tool_use(made):
    _, registry, _ = made
    by_skill = samples_by_skill(registry, "mixed")
    assert set(by_skill) == set(MIX), registry.rejections("mixed")
    assert any(len([m for m in s["messages"] if m["role"] == "user"]) > 1 for s in by_skill["conversation"])
    assert any(m.get("tool_calls") for s in by_skill["tool_use"] for m in s["messages"])
    assert all(s["tools"][0]["function"]["name"] for s in by_skill["tool_use"])


def test_hf_export_loads_every_config_with_one_schema(made, tmp_path):
    _, registry, _ = made
    result = export.export(registry, ["mixed"], tmp_path / "hf")
    by_skill = samples_by_skill(registry, "mixed")
    features = export.hf_features()
    loaded = {}
    for skill, samples in by_skill.items():
        ds = datasets.load_dataset(str(tmp_path / "hf"), skill, split="train")
        assert ds.features == features            # the same columns and types in every config
        assert [row["id"] for row in ds] == [s["id"] for s in samples]
        for row, sample in zip(ds, samples):
            assert [without_nulls(m) for m in row["messages"]] == sample["messages"]
            assert row["skill"] == skill and row["run_id"] == "mixed" and row["kept"] is True
            assert row["task_type"] == sample["metadata"]["task_type"]
            assert row["refinement_round"] == sample["metadata"]["refinement_round"]
            assert row["parent_sample_id"] == sample["metadata"]["parent_sample_id"]
            assert row["transformation"] == sample["metadata"]["transformation"]["agent"]
            assert row["seed_source"] == sample["metadata"]["seed_source"]
            assert row["checks"] == [{"detail": None, **c} for c in sample["metadata"]["checks"]]
            assert row["gates"] == [] and row["review"] is None
            assert row["tools"] == (json.dumps(sample["tools"]) if skill == "tool_use" else None)
        loaded[skill] = ds
    assert result.rows == sum(len(s) for s in by_skill.values())
    mixed = datasets.concatenate_datasets(list(loaded.values()))   # configs concatenate into one mix
    assert len(mixed) == result.rows
    for shard in (tmp_path / "hf" / "data").rglob("*.parquet"):    # and each shard reads on its own
        assert datasets.Dataset.from_parquet(str(shard)).features == features


def test_card_yaml_parses_and_its_counts_match_the_registry(made, tmp_path):
    home, registry, _ = made
    export.export(registry, ["mixed"], tmp_path / "hf", license="cc-by-4.0")
    card = (tmp_path / "hf" / "README.md").read_text()
    meta = front_matter(card)
    shown = json.loads(run_cli("runs", "show", "mixed", "--json", home=home.root).stdout)
    samples = {row["skill"]: row["samples"] for row in shown["skills"]}
    assert {c["config_name"] for c in meta["configs"]} == set(samples)
    assert {i["config_name"]: i["splits"][0]["num_examples"] for i in meta["dataset_info"]} == samples
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["annotations_creators"] == ["machine-generated"]
    assert {"synthetic", "agentinstruct"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"] and "text-generation" in meta["task_categories"]
    from huggingface_hub import DatasetCard
    assert DatasetCard.load(tmp_path / "hf" / "README.md").data.configs == meta["configs"]
    assert card.count("```mermaid") == len(samples)
    for skill, n in samples.items():
        assert f"### {skill}\n\n- rows: {n}" in card
    assert "License: not set" not in card


def test_a_card_without_a_license_says_so(made, tmp_path):
    _, registry, _ = made
    export.export(registry, ["second"], tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert front_matter(card)["license"] == "unknown" and "License: not set at export" in card


def test_orca_layout_is_one_string_column_per_split(made, tmp_path):
    _, registry, _ = made
    export.export(registry, ["mixed"], tmp_path / "orca", format="orca")
    meta = front_matter((tmp_path / "orca" / "README.md").read_text())
    assert [c["config_name"] for c in meta["configs"]] == ["default"]
    for skill, samples in samples_by_skill(registry, "mixed").items():
        split = skills.load(skill).split                # rc, follow_up, ... as orca names its splits
        ds = datasets.load_dataset(str(tmp_path / "orca"), split=split)
        assert list(ds.features) == ["messages"] and ds.features["messages"].dtype == "string"
        assert [json.loads(row["messages"]) for row in ds] == [s["messages"] for s in samples]
        assert all(json.loads(row["messages"])[0]["role"] == "system" for row in ds)
    assert sorted(p.name for p in (tmp_path / "orca" / "data").iterdir())[0].endswith("-00000-of-00001.parquet")


def test_sharegpt_conversations_alternate_and_keep_tool_calls(made, tmp_path):
    _, registry, _ = made
    export.export(registry, ["mixed"], tmp_path / "sg", format="sharegpt")
    for skill, samples in samples_by_skill(registry, "mixed").items():
        ds = datasets.load_dataset(str(tmp_path / "sg"), skill, split="train")
        for row, sample in zip(ds, samples):
            turns = row["conversations"]
            assert row["system"] == sample["messages"][0]["content"]
            assert all(t["from"] in ("human", "observation") for t in turns[0::2])
            assert all(t["from"] in ("gpt", "function_call") for t in turns[1::2])
            texts = [m["content"] for m in sample["messages"][1:] if m["content"]]
            assert [t["value"] for t in turns if t["from"] in ("human", "gpt", "observation")] == texts
            calls = [c for m in sample["messages"] for c in m.get("tool_calls") or []]
            assert [json.loads(t["value"]) for t in turns if t["from"] == "function_call"] == [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])} for c in calls]
            if skill == "tool_use":
                assert calls and json.loads(row["tools"]) == sample["tools"]


def test_sharegpt_merges_results_of_one_call_turn():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    system, turns = export.sharegpt_turns([
        {"role": "system", "content": "s"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [call, {**call, "id": "c2"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"}, {"role": "tool", "tool_call_id": "c2", "content": "2"},
        {"role": "assistant", "content": "done"}])
    assert system == "s"
    assert turns == [{"from": "human", "value": "q"},
                     {"from": "function_call", "value": json.dumps([{"name": "f", "arguments": {"x": 1}}] * 2)},
                     {"from": "observation", "value": '["1", "2"]'}, {"from": "gpt", "value": "done"}]


def test_jsonl_is_todays_file_and_loads(made, tmp_path):
    _, registry, _ = made
    export.export(registry, ["mixed"], tmp_path / "jl", format="jsonl")
    lines = (tmp_path / "jl" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == samples_of(registry, "mixed")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "jl" / "samples.jsonl"), split="train")
    assert ds["id"] == [s["id"] for s in samples_of(registry, "mixed")]


def test_several_runs_export_into_one_dataset_each_sample_once(made, tmp_path):
    _, registry, _ = made
    result = export.export(registry, ["mixed", "second", "mixed"], tmp_path / "both")
    by_skill = samples_by_skill(registry, "mixed", "second")
    meta = front_matter((tmp_path / "both" / "README.md").read_text())
    counts = {i["config_name"]: i["splits"][0]["num_examples"] for i in meta["dataset_info"]}
    assert counts == {skill: len(s) for skill, s in by_skill.items()}
    assert counts["mcq"] == len([s for s in samples_of(registry, "mixed") if s["skill"] == "mcq"]) + len(
        [s for s in samples_of(registry, "second") if s["skill"] == "mcq"])
    ds = datasets.load_dataset(str(tmp_path / "both"), "mcq", split="train")
    assert len(set(ds["id"])) == len(ds) and set(ds["run_id"]) == {"mixed", "second"}
    assert result.rows == sum(counts.values())


def _rejected_run(registry: Registry, base: dict) -> None:
    """A run with three samples: one kept, one a gate rejected, one a reviewer rejected (the verdict
    shapes the gate and review issues will write)."""
    registry.create_run("judged", "mcq", {"skill": "mcq", "seeds": [], "out": "judged.jsonl", "model": "fake"})
    registry.db["seeds"].insert({"run_id": "judged", "id": "s1", "ordinal": 0, "source": "x.md", "skill": "mcq",
                                 "status": "pending"})

    def variant(n: int, **meta) -> dict:
        return {**base, "id": f"judged:s1:r{n}", "metadata": {**base["metadata"], **meta}}

    registry.finish_seed("judged", "s1", status="accepted", samples=[
        variant(0, gates=[{"gate": "dedup", "verdict": "pass", "reason": ""}]),
        variant(1, gates=[{"gate": "dedup", "verdict": "reject", "reason": "near-duplicate of judged:s1:r0"}]),
        variant(2, review={"reviewer": "judge", "verdict": "reject", "reason": "answer is wrong"})])


def test_rejected_samples_are_left_out_unless_asked_for_with_their_verdicts(made, tmp_path):
    _, registry, _ = made
    mcq = next(s for s in samples_of(registry, "mixed") if s["skill"] == "mcq")
    _rejected_run(registry, mcq)
    kept = export.export(registry, ["judged"], tmp_path / "kept")
    assert kept.rows == 1 and kept.dropped == {"gate dedup": 1, "review judge": 1}
    ds = datasets.load_dataset(str(tmp_path / "kept"), "mcq", split="train")
    assert ds["id"] == ["judged:s1:r0"] and ds[0]["gates"] == [{"gate": "dedup", "verdict": "pass", "reason": ""}]
    assert "Left out as rejected" in (tmp_path / "kept" / "README.md").read_text()

    every = export.export(registry, ["judged"], tmp_path / "every", include_rejected=True)
    assert every.rows == 3 and not every.dropped
    ds = datasets.load_dataset(str(tmp_path / "every"), "mcq", split="train")
    assert ds.features == export.hf_features()
    assert ds["kept"] == [True, False, False]
    assert ds[1]["gates"][0] == {"gate": "dedup", "verdict": "reject", "reason": "near-duplicate of judged:s1:r0"}
    assert ds[2]["review"] == {"reviewer": "judge", "verdict": "reject", "reason": "answer is wrong"}
    assert ds[0]["review"] is None


def test_runs_without_samples_are_refused_before_anything_is_written(made, tmp_path):
    _, registry, _ = made
    registry.create_run("empty", "mcq", {"skill": "mcq", "seeds": [], "out": "empty.jsonl", "model": "fake"})
    with pytest.raises(export.ExportError, match="nothing to export: empty made no samples"):
        export.export(registry, ["empty"], tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_sample_with_a_failed_check_is_rejected():
    assert export.rejected_by({"checks": [{"check": "python_tests", "ok": True},
                                          {"check": "python_tests", "ok": False}]}) == "check python_tests"
    assert export.rejected_by({"checks": [{"check": "python_tests", "ok": True}], "gates": [], "review": None}) is None


def test_large_exports_are_sharded_by_size(made, tmp_path, monkeypatch):
    _, registry, _ = made
    monkeypatch.setattr(export, "BATCH_ROWS", 1)      # a batch per row, and a shard per batch
    export.export(registry, ["mixed"], tmp_path / "tiny", shard_bytes=1)
    shards = sorted(p.name for p in (tmp_path / "tiny" / "data" / "conversation").iterdir())
    n = len(samples_by_skill(registry, "mixed")["conversation"])
    assert n >= 2 and shards == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    ds = datasets.load_dataset(str(tmp_path / "tiny"), "conversation", split="train")
    assert len(ds) == n


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from teachgraph import embedded
    try:
        path = embedded.model_path()
    except embedded.EmbeddedError as exc:
        pytest.skip(str(exc))
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    from tests.gguf_tokenizer import tokenizer_from_gguf
    return tokenizer_from_gguf(path)


def test_rows_render_with_smollm2s_chat_template_offline(made, tmp_path, smollm2_tokenizer, monkeypatch):
    """What TRL's SFTTrainer does with a conversational row: apply_chat_template(messages, tools=...)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, registry, _ = made
    export.export(registry, ["mixed"], tmp_path / "hf")
    tok = smollm2_tokenizer
    assert "<|im_start|>" in tok.chat_template
    for skill in MIX:
        for row in datasets.load_dataset(str(tmp_path / "hf"), skill, split="train"):
            tools = json.loads(row["tools"]) if row["tools"] else None
            text = tok.apply_chat_template(row["messages"], tools=tools, tokenize=False)
            for message in row["messages"]:
                assert f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>" in text
            ids = tok.apply_chat_template(row["messages"], tools=tools, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            assert tok.decode(ids) == text


# ---- the CLI and --push ----

def test_export_cli_refuses_bad_input_in_one_line(made, tmp_path):
    home, _, _ = made
    for args, message in [
        (["nope", "--out", str(tmp_path / "a")], "no run 'nope'"),
        (["mixed", "--out", str(tmp_path / "b"), "--format", "xml"], "unknown format 'xml'"),
    ]:
        done = run_cli("export", *args, home=home.root)
        assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    done = run_cli("export", "mixed", "--out", str(tmp_path / "full"), home=home.root)
    assert done.returncode == 2 and "already exists" in done.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine" and len(list((tmp_path / "full").iterdir())) == 1


TOKEN = "hf_teachgraphTestTokenNeverShown0123"


def test_push_uploads_the_folder_to_a_fake_hub_and_never_shows_the_token(made, tmp_path):
    home, _, _ = made
    out = tmp_path / "pushed"
    with FakeHub() as hub:
        done = run_cli("export", "mixed", "--out", str(out), "--push", "me/teach", home=home.root,
                       env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.endpoint})
    assert done.returncode == 0, done.stderr
    sent = hub.files["me/teach"]
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sent == local and "README.md" in sent and any(k.endswith(".parquet") for k in sent)
    # every write carries the token; huggingface_hub 2.4 also makes an anonymous GET (/api/agent-harnesses)
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in hub.requests if r["method"] != "GET")
    assert all(r["headers"].get("authorization") in (None, f"Bearer {TOKEN}") for r in hub.requests)
    assert "pushed: " in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    for path in [*out.rglob("*"), *home.root.rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_push_without_a_token_or_refused_is_one_line_without_the_token(made, tmp_path):
    home, _, _ = made
    done = run_cli("export", "mixed", "--out", str(tmp_path / "a"), "--push", "me/teach", home=home.root,
                   env={"HF_TOKEN": ""})
    assert done.returncode == 2 and "HF_TOKEN" in done.stderr and done.stderr.strip().count("\n") == 0
    assert not (tmp_path / "a").exists()              # refused before any work
    with FakeHub(refuse=403) as hub:
        done = run_cli("export", "mixed", "--out", str(tmp_path / "b"), "--push", "me/teach", home=home.root,
                       env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.endpoint})
    assert done.returncode == 2 and "refused the upload to me/teach (HTTP 403)" in done.stderr, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert (tmp_path / "b" / "README.md").is_file()   # the export itself is kept: push again later
