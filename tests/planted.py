"""Chat samples with planted defects, labelled with the gate that must drop them (None: must stay).

Text is random sentences over the words of corpus/sample, so no two generated texts share a long
n-gram by chance. Used by tests/test_gates.py and bench/filter.py."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY = sorted({w for p in (ROOT / "corpus" / "sample").iterdir()
                     for w in re.findall(r"[A-Za-z]{3,12}", p.read_text(encoding="utf-8")) if re.search("[aeiou]", w)})


@dataclass
class Row:
    sample: dict
    expect: Optional[str]          # the gate that must drop it, None if it must be kept
    kind: str
    duplicate_of: Optional[str] = None   # for a planted copy: the original's id


def chat(sample_id: str, user, assistant, **extra) -> dict:
    users = user if isinstance(user, list) else [user]
    replies = assistant if isinstance(assistant, list) else [assistant]
    messages = [{"role": "system", "content": ""}]
    for u, a in zip(users, replies):
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return {"id": sample_id, "messages": messages, **extra}


class Planter:
    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.count = 0

    def sentence(self, low: int = 8, high: int = 18) -> str:
        ws = self.rng.choices(VOCABULARY, k=self.rng.randint(low, high))
        return ws[0].capitalize() + " " + " ".join(ws[1:]) + "."

    def text(self, sentences: int) -> str:
        return " ".join(self.sentence() for _ in range(sentences))

    def question(self) -> str:
        return self.sentence(7, 14)[:-1] + "?"

    def next_id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}-{self.count}"

    def edit(self, text: str, changes: int) -> str:
        ws = text.split(" ")
        for i in self.rng.sample(range(len(ws)), min(changes, len(ws))):
            ws[i] = self.rng.choice(VOCABULARY)
        return " ".join(ws)

    # ---- clean rows
    def passage_rows(self, questions: int = 3) -> list[dict]:
        """Several different questions about one passage: all must stay."""
        passage = self.text(6)
        return [chat(self.next_id("rc"), f"{passage}\n\n{self.question()}",
                     f"{self.text(2)}\n\nAnswer: {self.rng.choice('ABCD')}") for _ in range(questions)]

    def quoting_rows(self) -> list[dict]:
        """Two different questions about one passage, both answered by quoting the same sentence:
        the responses are near-identical, only the questions tell the samples apart."""
        quote = self.text(3)
        passage = f"{self.text(3)} {quote} {self.text(2)}"
        return [chat(self.next_id("quote"), f"{passage}\n\n{self.question()}",
                     f'The passage says: "{quote}" So the answer is {self.rng.choice(VOCABULARY)}.') for _ in range(2)]

    def qa_row(self) -> dict:
        return chat(self.next_id("qa"), self.question(), self.text(3))

    def modification_row(self) -> dict:
        """A light edit of a long text: the reply repeats most of the prompt's text, legitimately."""
        original = self.text(7)
        return chat(self.next_id("mod"), f"Fix the typos in the text below.\n\nText:\n{original}",
                    self.edit(original, 3))

    def conversation_row(self) -> dict:
        return chat(self.next_id("conv"), [self.question(), self.question()], [self.text(2), self.text(2)],
                    metadata={"skill": "conversation", "seed_id": "s1"})

    def clean(self, n: int) -> list[dict]:
        rows: list[dict] = []
        makers = [self.qa_row, self.modification_row, self.conversation_row]
        while len(rows) < n:
            pick = self.rng.random()
            if pick < 0.3:
                rows += self.passage_rows()
            elif pick < 0.4:
                rows += self.quoting_rows()
            else:
                rows.append(self.rng.choice(makers)())
        return rows

    # ---- defects
    def exact_copy(self, row: dict) -> dict:
        def noisy(text: str) -> str:
            return "  " + text.upper().replace(" ", "  ").replace(".", " !") + " "
        copy = json.loads(json.dumps(row))
        copy["id"] = self.next_id("exact")
        for m in copy["messages"]:
            m["content"] = noisy(m["content"]) if m["content"] else m["content"]
        return copy

    def near_copy(self, row: dict) -> dict:
        copy = json.loads(json.dumps(row))
        copy["id"] = self.next_id("near")
        for m in copy["messages"]:
            if m["role"] == "assistant":
                m["content"] = self.edit(m["content"], 2)
            elif m["role"] == "user":
                head, _, last = m["content"].rpartition("\n\n")
                m["content"] = f"{head}\n\n{self.edit(last, 1)}" if head else self.edit(last, 1)
        return copy

    def contaminated(self, eval_items: list[dict]) -> list[dict]:
        item = self.rng.choice(eval_items)
        span = " ".join(item["question"].split(" ")[2:17])      # 15 words of an evaluation question
        return [chat(self.next_id("leak"), f"{self.sentence()} {span} {self.sentence()}", self.text(3)),
                chat(self.next_id("leak"), self.question(), f"{self.text(1)} {span.upper()}, {self.text(1)}")]

    def degenerate(self) -> list[dict]:
        q = self.question()
        prompt = f"{q}\n\n{self.text(3)}"
        return [
            chat(self.next_id("empty"), q, ""),
            chat(self.next_id("blank"), q, " \n\t "),
            chat(self.next_id("loop"), q, self.sentence() + " " + "I will now answer the question again. " * 30),
            chat(self.next_id("charloop"), q, "Answer: " + "=" * 600),
            chat(self.next_id("echo"), prompt, prompt),
            chat(self.next_id("fffd"), q, self.text(2).replace(" ", " \ufffd", 1)),
            chat(self.next_id("ctrl"), q, self.text(2) + "\x00\x07"),
            chat(self.next_id("gibberish"), q, " ".join("".join(self.rng.choices("abcdefghijklmnopqrstuvwxyz",
                                                                          k=self.rng.randint(5, 10)))
                                                         for _ in range(25))),
            {"id": self.next_id("nouser"), "messages": [{"role": "system", "content": "Be nice."},
                                                        {"role": "assistant", "content": self.text(2)}]},
            chat(self.next_id("fields"), q, "the question, with its options or statements when the type has them "
                                             "(A) ... (B) ..., self-contained"),
            chat(self.next_id("placeholder"), f"$content\n\n{q}", self.text(2)),
        ]


def eval_set(planter: Planter, n: int = 40) -> list[dict]:
    return [{"id": f"ev{i}", "question": planter.text(2), "answer": planter.sentence(3, 6)} for i in range(n)]


def planted(clean: int = 300, seed: int = 7) -> tuple[list[Row], list[dict]]:
    """Clean rows, then exact/near copies of some of them, contaminated and degenerate rows, shuffled
    among themselves (a copy always comes after its original)."""
    p = Planter(seed)
    evals = eval_set(p)
    rows = [Row(r, None, r["id"].split("-")[0]) for r in p.clean(clean)]
    originals = [r.sample for r in rows if r.kind in ("qa", "rc", "mod", "conv")]
    defects = []
    for original in p.rng.sample(originals, 30):
        defects.append(Row(p.exact_copy(original), "exact_duplicate", "exact", original["id"]))
    for original in p.rng.sample(originals, 30):
        defects.append(Row(p.near_copy(original), "near_duplicate", "near", original["id"]))
    for _ in range(10):
        defects += [Row(r, "decontaminate", "leak") for r in p.contaminated(evals)]
    for _ in range(3):
        defects += [Row(r, "degenerate", r["id"].split("-")[0]) for r in p.degenerate()]
    p.rng.shuffle(defects)
    return rows + defects, evals
