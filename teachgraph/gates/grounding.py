"""Grounding: a reply that should answer from the passage it was given (reading comprehension, rag,
text extraction ...) but whose words are not in it.

Cheap lexical support: the share of the reply's content-word n-grams (function words left out) that
occur in the sample's user turns, where the passage is. A reply that copies or paraphrases the passage
reuses its names, numbers and terms; an invented one does not. It cannot tell a true inference from a
false one: the LLM judge (gates/judge.py, `--judge-model`) is the finer tool. A skill turns it on in
skill.toml, `[gates.grounding]` with `action = "flag"` (kept, with the gate's note) or `"drop"`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from teachgraph.gates.base import KEEP, ChatSample, Gate, Verdict, register
from teachgraph.gates.text import content_words, support


@register("grounding")
class Grounding(Gate):
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        action: Literal["flag", "drop"] = "flag"
        # below this share of the reply's content-word n-grams found in the passage, the reply is ungrounded;
        # 0.25 (n=1): planted paraphrased answers score >= 0.38, answers from other documents <= 0.15
        # (tests/test_grounding.py prints precision and recall at each threshold)
        min_support: float = Field(0.25, ge=0, le=1)
        n: int = Field(1, ge=1, le=4)
        # a shorter reply (a letter, True/False, a number) has too few words to measure
        min_words: int = Field(4, ge=1)

    def check(self, sample: ChatSample) -> Verdict:
        reply = sample.response
        if len(content_words(reply)) < self.settings.min_words:
            return KEEP
        share = support(reply, sample.instruction, self.settings.n)
        if share >= self.settings.min_support:
            return KEEP
        reason = (f"{share:.0%} of the reply's content-word {self.settings.n}-grams are in the passage "
                  f"(needs {self.settings.min_support:.0%})")
        return self.drop(reason) if self.settings.action == "drop" else self.flag(reason)
