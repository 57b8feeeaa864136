"""Teach a student model on a run's accepted samples and measure it per task type.

The runs' samples are split into train and held-out by seed (every sample of a seed lands on one side), the
student is fine-tuned on the CPU with TRL's SFTTrainer on the samples' `messages` (loss on assistant turns only,
LoRA with peft by default), and it is evaluated on the held-out part before and after: loss on the assistant
tokens, and, for skills whose answers have an automatic check, the share of items whose greedy generation passes.

torch, transformers, trl and peft are imported inside the functions that use them: they are the `teach` extra,
and importing them costs seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from teachgraph.checkpoints.registry import Registry
from teachgraph.nodes.checks import (choice_key, label_in_set, python_compute, python_tests, tool_arguments,
                                     web_actions)

EMBEDDED_STUDENT = "smollm2"

# SmolLM2's chat template (as its GGUF file and its Hugging Face repository ship it) has no `{% generation %}`
# markers, so transformers cannot return an assistant-token mask for it and TRL has no patched version of it
# (trl.chat_template_utils.get_training_chat_template raises). This is the same template with the markers around
# each assistant turn's content and its <|im_end|> (the student must learn to stop); it renders the same text.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt"
    " %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SMOLLM2_TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class TeachError(RuntimeError):
    """Bad input to `teach` (unknown run, too few seeds, a student that cannot be loaded): one line."""


@dataclass
class Example:
    sample_id: str
    seed_id: str
    skill: str
    task_type: str
    messages: list[dict]
    task: dict  # the item the flow wrote (metadata.task): answer keys, label sets, tests, the page ...
    tools: list[dict] = field(default_factory=list)  # tool use: the tools offered (OpenAI function format)


@dataclass
class Split:
    train: list[Example]
    heldout: list[Example]
    train_seeds: list[str]
    heldout_seeds: list[str]


@dataclass
class TeachSettings:
    student: str = EMBEDDED_STUDENT
    steps: int = 60
    lora: bool = True
    heldout: float = 0.2
    max_length: int = 1024
    batch_size: int = 2
    learning_rate: Optional[float] = None  # default: 2e-4 with LoRA, 2e-5 for full fine-tuning
    max_new_tokens: int = 160
    seed: int = 0


# ---------------------------------------------------------------- data

def _messages(raw: list[dict]) -> list[dict]:
    """Role and text only: the student's template renders `content`; tool calls are kept as their JSON text."""
    out = []
    for message in raw:
        content = message.get("content") or ""
        if message.get("tool_calls"):
            content = (content + "\n" if content else "") + json.dumps(message["tool_calls"], ensure_ascii=False)
        role = message["role"] if message["role"] in ("system", "user", "assistant") else "user"
        out.append({"role": role, "content": content})
    return out


def load_examples(registry: Registry, run_ids: Iterable[str]) -> list[Example]:
    examples: list[Example] = []
    for run_id in run_ids:
        if registry.run(run_id) is None:
            raise TeachError(f"no run {run_id!r} (see: python cli.py runs list)")
        for sample_id, body in registry.samples(run_id):
            sample = json.loads(body)
            meta = sample.get("metadata", {})
            messages = _messages(sample["messages"])
            if not any(m["role"] == "assistant" and m["content"] for m in messages):
                continue
            examples.append(Example(sample_id, meta.get("seed_id") or sample_id, sample["skill"],
                                    meta.get("task_type") or "-", messages, meta.get("task") or {},
                                    sample.get("tools") or []))
    if not examples:
        raise TeachError(f"the runs {', '.join(run_ids)} have no accepted samples")
    return examples


def split_by_seed(examples: list[Example], heldout: float) -> Split:
    """Seeds ordered by a hash of their id; the first round(n * heldout) are held out (at least one, and at least
    one left to train on). Deterministic, independent of sample order, and no seed is on both sides."""
    if not 0 < heldout < 1:
        raise TeachError(f"--heldout must be between 0 and 1 (got {heldout})")
    seeds = sorted({e.seed_id for e in examples}, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    if len(seeds) < 2:
        raise TeachError(f"need samples from at least 2 seeds to hold some out (got {len(seeds)})")
    n_heldout = min(max(1, round(len(seeds) * heldout)), len(seeds) - 1)
    held = set(seeds[:n_heldout])
    return Split(train=[e for e in examples if e.seed_id not in held],
                 heldout=[e for e in examples if e.seed_id in held],
                 train_seeds=sorted(set(seeds) - held), heldout_seeds=sorted(held))


# ---------------------------------------------------------------- automatic checks on the student's own answers

_DOC_ID = re.compile(r"^Document Id:\s*(\d+)", re.M)
_LETTER = re.compile(r"Answer:\s*\(?([A-Ea-e])\)?")
_LABEL = re.compile(r"Label:\s*(.+)")


def _json_object(text: str) -> Optional[dict]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _rag_cites_existing(example: Example, text: str) -> bool:
    """rag's answer agent is held to JSON citing only ids in its context (graphs/rag.py); the same here."""
    reply = _json_object(text)
    if reply is None or not isinstance(reply.get("answer"), str) or not isinstance(reply.get("relevant_passages"),
                                                                                   list):
        return False
    context = {int(n) for m in example.messages if m["role"] == "user" for n in _DOC_ID.findall(m["content"])}
    cited = reply["relevant_passages"]
    return all(isinstance(n, int) and n in context for n in cited)


def _letter_matches_key(example: Example, text: str) -> bool:
    found = _LETTER.findall(text)
    return bool(found) and choice_key(example.task, {"answer": found[-1]}).ok


def _label_in_set(example: Example, text: str) -> bool:
    found = _LABEL.search(text)
    return bool(found) and label_in_set(example.task, {"label": found.group(1)}).ok


_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)
_CALCULATION = re.compile(r"^Calculation:\s*(.+?)\s*=", re.M)
_ACTIONS = re.compile(r"^Actions:\s*\n(.*)", re.M | re.S)


def _code_passes_tests(example: Example, text: str) -> bool:
    """coding: the student's code block must pass the tests the flow wrote for the task, in the sandbox."""
    block = _CODE_BLOCK.search(text)
    return bool(block) and python_tests(example.task, {"code": block.group(1)}).ok


def _calculation_value(text: str) -> Optional[float]:
    found = _CALCULATION.search(text)
    if not found:
        return None
    verdict = python_compute({}, {"calculation": found.group(1)})
    return float(verdict.detail.removeprefix("= ")) if verdict.ok else None


def _estimate_within_tenfold(example: Example, text: str) -> bool:
    """fermi: the student's calculation evaluates (in the sandbox) to within a factor of ten of the sample's
    own computed estimate: an order-of-magnitude answer is what a Fermi estimate promises."""
    reference = _calculation_value(next(m["content"] for m in example.messages if m["role"] == "assistant"))
    value = _calculation_value(text)
    if reference is None or value is None or value == 0 or reference == 0 or (value > 0) != (reference > 0):
        return False
    return 0.1 <= value / reference <= 10


def _actions_on_the_page(example: Example, text: str) -> bool:
    """web_agent: after "Actions:", one action per line of the prompt's grammar, on elements the page has."""
    found = _ACTIONS.search(text)
    page = "\n".join(m["content"] for m in example.messages if m["role"] == "user")  # the prompt shows the page
    return bool(found) and web_actions({"content": page}, {"actions": found.group(1)}).ok


def _calls_of(text: str) -> Optional[list[dict]]:
    """The tool calls in a reply written as the training text shows them (OpenAI's tool_calls list as JSON)."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        raw = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    calls = []
    for call in raw if isinstance(raw, list) else ():
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        arguments = function.get("arguments", "{}")
        calls.append({"name": function["name"],
                      "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)})
    return calls or None


def _tool_calls_valid(example: Example, text: str) -> bool:
    """tool_use: where the sample calls tools, the student must call offered tools with valid arguments; where
    the sample asks or declines instead, the student must not call any."""
    reference_calls = next(m for m in example.messages if m["role"] == "assistant")["content"]
    expected_call = _calls_of(reference_calls) is not None
    calls = _calls_of(text)
    if not expected_call:
        return calls is None
    functions = [tool.get("function", tool) for tool in example.tools]
    apis = [{"name": f["name"], "parameters": [{"name": name, "required": name in f["parameters"].get("required", [])}
                                               for name in f.get("parameters", {}).get("properties", {})]}
            for f in functions]
    item = {"tools": [f["name"] for f in functions], "apis": apis}
    return bool(calls) and tool_arguments(item, {"action": "call_tools", "calls": calls}).ok


# Skill -> check of the student's generated reply, the same checks the flows hold their own answers to.
GENERATION_CHECKS: dict[str, Callable[[Example, str], bool]] = {
    "rag": _rag_cites_existing,
    "mcq": _letter_matches_key,
    "analytical_reasoning": _letter_matches_key,
    "text_classification": _label_in_set,
    "coding": _code_passes_tests,
    "fermi": _estimate_within_tenfold,
    "web_agent": _actions_on_the_page,
    "tool_use": _tool_calls_valid,
}


# ---------------------------------------------------------------- the student

def check_student(student: str) -> None:
    """Refuse a --student that cannot load before paying for torch's and transformers' imports (seconds)."""
    if student != EMBEDDED_STUDENT and not (Path(student) / "config.json").is_file():
        raise TeachError(f"--student {student!r} is not a Hugging Face model folder (no config.json) "
                         f"nor {EMBEDDED_STUDENT!r}")


def load_student(student: str):
    """(model, tokenizer) from `smollm2` (the embedded GGUF, dequantized) or a Hugging Face folder."""
    check_student(student)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the student is on this disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if student == EMBEDDED_STUDENT:
        from teachgraph.embedded import EmbeddedError, model_path
        try:
            path = model_path()
        except EmbeddedError as exc:
            raise TeachError(str(exc)) from None
        kwargs: dict[str, Any] = {"gguf_file": path.name}
        folder = str(path.parent)
    else:
        folder, kwargs = student, {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as exc:
        raise TeachError(f"cannot load the student {student!r}: {str(exc).splitlines()[0]}") from None
    if student == EMBEDDED_STUDENT:
        _forget_gguf_quantization(model)
    _prepare_tokenizer(tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def _forget_gguf_quantization(model) -> None:
    """transformers dequantizes a GGUF file into ordinary float tensors but keeps its GGUF "quantizer" on the model,
    and the Trainer refuses to train a model quantized with GGUF; there is nothing quantized left to refuse."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized") and not isinstance(getattr(type(model), "is_quantized", None), property):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _prepare_tokenizer(tokenizer) -> None:
    # SmolLM2's GGUF metadata names <|im_start|> as its end-of-sequence token; a turn ends at <|im_end|>.
    if "<|im_end|>" in tokenizer.get_vocab() and tokenizer.eos_token != "<|im_end|>":
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def training_template(tokenizer) -> str:
    """A chat template with `{% generation %}` markers, so transformers can mask all but the assistant tokens."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template or ""
    if has_generation_markers(template):
        return template
    if template.strip() == SMOLLM2_CHAT_TEMPLATE or template.strip() == SMOLLM2_TRAINING_TEMPLATE:
        return SMOLLM2_TRAINING_TEMPLATE
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        raise TeachError("the student's chat template has no {% generation %} markers and no training version "
                         "is known for it: add the markers to its chat_template") from None
    return patched or template


def _encode(tokenizer, template: str, messages: list[dict]) -> tuple[list[int], list[int]]:
    encoded = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    return list(encoded["input_ids"]), list(encoded["assistant_masks"])


# ---------------------------------------------------------------- evaluation

@dataclass
class Scores:
    loss_sum: float = 0.0
    tokens: int = 0
    n: int = 0
    checked: int = 0
    passed: int = 0

    def as_dict(self) -> dict[str, Optional[float]]:
        return {"loss": round(self.loss_sum / self.tokens, 4) if self.tokens else None,
                "pass_rate": round(self.passed / self.checked, 4) if self.checked else None}


def evaluate(model, tokenizer, template: str, examples: list[Example], *, max_new_tokens: int,
             progress: Optional[Callable[[int], None]] = None) -> dict[tuple[str, str], Scores]:
    """Per (skill, task type): summed loss over assistant tokens, and checked generations that pass."""
    import torch

    model.eval()
    scores: dict[tuple[str, str], Scores] = {}
    with torch.no_grad():
        for example in examples:
            row = scores.setdefault((example.skill, example.task_type), Scores())
            row.n += 1
            ids, mask = _encode(tokenizer, template, example.messages)
            inputs = torch.tensor([ids])
            logits = model(input_ids=inputs).logits[0, :-1]
            targets = torch.tensor(ids[1:])
            keep = torch.tensor(mask[1:], dtype=torch.bool)
            if keep.any():
                losses = torch.nn.functional.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
                row.loss_sum += float(losses)
                row.tokens += int(keep.sum())
            check = GENERATION_CHECKS.get(example.skill)
            if check is not None:
                row.checked += 1
                row.passed += check(example, generate_reply(model, tokenizer, example.messages,
                                                            max_new_tokens=max_new_tokens))
            if progress:
                progress(1)
    return scores


def generate_reply(model, tokenizer, messages: list[dict], *, max_new_tokens: int) -> str:
    """The student's greedy answer to the conversation up to its first assistant turn."""
    import torch

    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = tokenizer.apply_chat_template(messages[:first], add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)


def _overall(scores: dict[tuple[str, str], Scores]) -> Scores:
    total = Scores()
    for row in scores.values():
        total.loss_sum += row.loss_sum
        total.tokens += row.tokens
        total.n += row.n
        total.checked += row.checked
        total.passed += row.passed
    return total


# ---------------------------------------------------------------- training

def train(model, tokenizer, template: str, examples: list[Example], settings: TeachSettings, work_dir: Path,
          callbacks: list = ()):
    """Fine-tune with TRL's SFTTrainer; returns (trained model with LoRA merged, per-step training losses)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    peft_config = None
    if settings.lora:
        from peft import LoraConfig
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    tokenizer.chat_template = template  # SFTTrainer masks with the template's generation markers
    # TRL turns activation (gradient) checkpointing on by default: it saves memory a 135M student does not
    # need and recomputes every forward pass during backward. transformers 5 renamed the option.
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    no_checkpointing = ({"activation_checkpointing": False} if "activation_checkpointing" in names
                        else {"gradient_checkpointing": False})
    config = SFTConfig(**no_checkpointing,
        output_dir=str(work_dir), max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate or (2e-4 if settings.lora else 2e-5), lr_scheduler_type="constant",
        warmup_steps=0, max_length=settings.max_length, assistant_only_loss=True, packing=False,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=settings.seed,
        dataloader_num_workers=0, bf16=False, fp16=False, disable_tqdm=False, eos_token=tokenizer.eos_token,
        dataset_num_proc=None)  # the pad token is the tokenizer's (_prepare_tokenizer sets it)
    dataset = Dataset.from_list([{"messages": e.messages} for e in examples])
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=list(callbacks))
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its per-step logs; stdout is the report's
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    trained = trainer.model
    if settings.lora:
        trained = trained.merge_and_unload()
    return trained, losses


# ---------------------------------------------------------------- the whole loop

@dataclass
class Teaching:
    """What `teach` measured; `report()` is report.json."""
    settings: TeachSettings
    split: Split
    dropped_too_long: int
    before: dict[tuple[str, str], Scores]
    after: dict[tuple[str, str], Scores]
    train_losses: list[float]
    seconds: dict[str, float] = field(default_factory=dict)
    gguf: Optional[str] = None

    def rows(self) -> list[dict]:
        return [{"skill": skill, "task_type": task_type, "n": self.before[key].n,
                 "before": self.before[key].as_dict(), "after": self.after[key].as_dict()}
                for key in sorted(self.before) for skill, task_type in [key]]

    def weakest(self) -> list[dict]:
        """Task types by held-out loss after training, worst first (every type has a loss; pass rates only
        where a check exists, so they do not order the ranking)."""
        rows = [r for r in self.rows() if r["after"]["loss"] is not None]
        rows.sort(key=lambda r: -r["after"]["loss"])
        return [{"skill": r["skill"], "task_type": r["task_type"], "loss": r["after"]["loss"],
                 "pass_rate": r["after"]["pass_rate"]} for r in rows]

    def report(self) -> dict:
        s = self.settings
        return {
            "student": s.student, "steps": s.steps, "lora": s.lora, "heldout_fraction": s.heldout,
            "max_length": s.max_length, "batch_size": s.batch_size, "loss_on": "assistant tokens",
            "train_samples": len(self.split.train), "heldout_samples": len(self.split.heldout),
            "dropped_too_long": self.dropped_too_long,
            "before": _overall(self.before).as_dict(), "after": _overall(self.after).as_dict(),
            "per_task_type": self.rows(), "weakest": self.weakest(),
            "train_loss": {"first": self.train_losses[0] if self.train_losses else None,
                           "last": self.train_losses[-1] if self.train_losses else None,
                           "steps": self.train_losses},
            "checked_skills": sorted({k[0] for k in self.before} & set(GENERATION_CHECKS)),
            "train_seeds": self.split.train_seeds, "heldout_seeds": self.split.heldout_seeds,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "gguf": self.gguf,
        }


def _fits(tokenizer, template: str, max_length: int) -> Callable[[Example], bool]:
    def fits(example: Example) -> bool:
        return len(_encode(tokenizer, template, example.messages)[0]) <= max_length
    return fits


def teach(registry: Registry, run_ids: list[str], out: Path, settings: TeachSettings, *,
          train_only: list[str] = (), progress=None, callbacks: list = ()) -> Teaching:
    """Split, evaluate, train, evaluate, save DIR/model and DIR/report.json. The samples of the
    `train_only` runs (repair rounds) are added to the training part only, so the held-out part is the
    same as without them and the two students are compared on the same items.

    `progress(label, total)` returns a function to advance a bar by n (the CLI passes rich's); `callbacks` go to
    the trainer (its own tqdm bar shows training)."""
    if settings.steps < 1:
        raise TeachError(f"--steps must be at least 1 (got {settings.steps})")
    examples = load_examples(registry, run_ids)
    clock = time.monotonic()
    model, tokenizer = load_student(settings.student)
    template = training_template(tokenizer)
    seconds = {"load": time.monotonic() - clock}
    fits = _fits(tokenizer, template, settings.max_length)
    kept = [e for e in examples if fits(e)]
    dropped = len(examples) - len(kept)
    if not kept:
        raise TeachError(f"no sample fits in --max-length {settings.max_length} tokens")
    split = split_by_seed(kept, settings.heldout)
    if train_only:
        held = set(split.heldout_seeds)
        extra = [e for e in load_examples(registry, train_only) if fits(e) and e.seed_id not in held]
        split = Split(train=split.train + extra, heldout=split.heldout,
                      train_seeds=sorted(set(split.train_seeds) | {e.seed_id for e in extra}),
                      heldout_seeds=split.heldout_seeds)
    advance = (lambda label: progress(label, len(split.heldout))) if progress else (lambda label: None)

    clock = time.monotonic()
    before = evaluate(model, tokenizer, template, split.heldout, max_new_tokens=settings.max_new_tokens,
                      progress=advance("evaluate before"))
    seconds["evaluate_before"] = time.monotonic() - clock
    clock = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="teachgraph-trainer-") as work_dir:  # the trainer saves nothing here
        model, losses = train(model, tokenizer, template, split.train, settings, Path(work_dir), callbacks)
    seconds["train"] = time.monotonic() - clock
    clock = time.monotonic()
    after = evaluate(model, tokenizer, template, split.heldout, max_new_tokens=settings.max_new_tokens,
                     progress=advance("evaluate after"))
    seconds["evaluate_after"] = time.monotonic() - clock

    save_student(model, tokenizer, out / "model")
    gguf_file = None
    if settings.student == EMBEDDED_STUDENT:  # llama.cpp can serve it; other students have no source GGUF to follow
        from teachgraph.embedded import model_path
        gguf_file = str(export_gguf(model, model_path(), out / "model.gguf"))
    result = Teaching(settings, split, dropped, before, after, losses, seconds, gguf_file)
    (out / "report.json").write_text(json.dumps(result.report(), indent=2, ensure_ascii=False) + "\n")
    return result


def export_gguf(model, source: Path, dest: Path) -> Path:
    """The trained weights in a GGUF file llama.cpp can serve, written with the `gguf` package: the source GGUF's
    metadata and tokenizer are copied and each of its tensors is replaced by the trained one (F16; norms F32).

    llama.cpp's own converter (convert_hf_to_gguf.py) is not in the `gguf` package, so this handles what the
    student is: a Llama-architecture model that was loaded from `source`. Like that converter, it permutes the
    query and key projections back into llama.cpp's rotary layout (transformers un-permutes them on load)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(source))
    arch_name = bytes(reader.fields[gguf.Keys.General.ARCHITECTURE].parts[-1]).decode()
    if arch_name != "llama":
        raise TeachError(f"GGUF export handles llama-architecture students only (this one is {arch_name!r})")
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = {}
    for hf_name, tensor in model.state_dict().items():
        base = hf_name.removesuffix(".weight")
        mapped = names.get_name(base)
        if mapped is not None:
            state[mapped + ".weight"] = tensor.detach().float().numpy()

    def permute(weights: np.ndarray, heads: int) -> np.ndarray:
        return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
                .swapaxes(1, 2).reshape(weights.shape))

    writer = gguf.GGUFWriter(str(dest), arch=arch_name)
    for fld in reader.fields.values():
        if fld.name == gguf.Keys.General.ARCHITECTURE or fld.name.startswith("GGUF.") \
                or fld.name == gguf.Keys.General.FILE_TYPE:
            continue
        kind = fld.types[0]
        writer.add_key_value(fld.name, fld.contents(), kind,
                             sub_type=fld.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for tensor in reader.tensors:
        if tensor.name not in state:
            raise TeachError(f"GGUF export: the trained model has no weight for {tensor.name}")
        weights = state[tensor.name]
        if tensor.name.endswith("attn_q.weight"):
            weights = permute(weights, config.num_attention_heads)
        elif tensor.name.endswith("attn_k.weight"):
            weights = permute(weights, config.num_key_value_heads)
        writer.add_tensor(tensor.name, weights.astype(np.float16 if weights.ndim > 1 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def save_student(model, tokenizer, folder: Path) -> None:
    """Hugging Face format: config.json, model.safetensors, the tokenizer with its (unmarked) chat template."""
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer.chat_template == SMOLLM2_TRAINING_TEMPLATE:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
