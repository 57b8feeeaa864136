"""Degenerate output: what a model writes when it fails without raising an error."""

from __future__ import annotations

import re
import tomllib
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from teachgraph.gates.base import KEEP, ChatSample, Gate, Verdict, register
from teachgraph.gates.text import ngrams, paragraphs, words

from teachgraph.skills import SKILLS_DIR  # noqa: E402 (installed or in a checkout)
_PLACEHOLDER = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")   # Unicode's Cc less tab, LF, CR
_LATIN_WORD = re.compile(r"\b[A-Za-z]{5,}\b")
_VOWEL = re.compile(r"[aeiouy]", re.IGNORECASE)
# Four consonants in a row: 1.2% of the sample corpus's words of 5+ letters (lengths, rightmost),
# 61% of random 5-10 letter strings.
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{4,}", re.IGNORECASE)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@lru_cache(maxsize=4)
def prompt_phrases(skills_dir: Path, n: int) -> tuple[frozenset, frozenset]:
    """Word n-grams of what the agents are told but a sample must never contain: field descriptions
    (skill.toml), agent prompts and their examples (prompts.toml), task-type descriptions; and the
    placeholder names. The [sample] templates are what a sample legitimately holds, so their n-grams
    are taken out."""
    told: set = set()
    sample_text: set = set()
    names: set = set()
    for path in sorted(skills_dir.glob("**/*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for section, value in data.items():
            for text in _strings(value):
                names.update(_PLACEHOLDER.findall(text))
                grams = set(ngrams(words(_PLACEHOLDER.sub(" ", text)), n)) if len(words(text)) >= n else set()
                (sample_text if section == "sample" else told).update(grams)
    return frozenset(told - sample_text), frozenset(names)


@register("degenerate")
class Degenerate(Gate):
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        repeated_ngram_share: float = Field(0.5,
                                            description="share of the reply's word 4-grams that repeat an earlier one")
        min_compression_ratio: float = Field(0.1,
                                             description="zlib size / size below this (replies >= 200 chars) is a loop")
        echo_share: float = Field(0.9,
                                  description="both ways share of word 4-grams for a reply that repeats the prompt")
        unpronounceable_share: float = Field(
            0.3, description="share of 5+ letter words with no vowel or 4 consonants in a row")
        copied_words: int = Field(6, ge=4,
                                  description="a run this long from the skills' agent prompts is copied instructions")
        skills_dir: Path = SKILLS_DIR

    def check(self, sample: ChatSample) -> Verdict:
        for test in (self._no_user_turn, self._empty_reply, self._bad_characters, self._repetition,
                     self._echo, self._gibberish, self._copied_prompt):
            reason = test(sample)
            if reason:
                return self.drop(reason)
        return KEEP

    def _no_user_turn(self, s: ChatSample) -> Optional[str]:
        if not any(t.strip() for t in s.user_turns):
            return "no user turn"
        if not s.assistant_turns:
            return "no assistant turn"

    def _empty_reply(self, s: ChatSample) -> Optional[str]:
        if any(not t.strip() for t in s.assistant_turns):
            return "empty or whitespace-only reply"

    def _bad_characters(self, s: ChatSample) -> Optional[str]:
        for part, text in (("reply", s.response), ("instruction", s.instruction)):
            if "\ufffd" in text:
                return f"replacement character (U+FFFD) in the {part}"
            control = _CONTROL.search(text)
            if control:
                return f"control character U+{ord(control.group()):04X} in the {part}"

    def _repetition(self, s: ChatSample) -> Optional[str]:
        grams = ngrams(s.response_words, 4)
        if len(grams) >= 30:
            share = 1 - len(set(grams)) / len(grams)
            if share >= self.settings.repeated_ngram_share:
                return f"runaway repetition: {share:.0%} of the reply's word 4-grams repeat"
        raw = s.response.encode("utf-8")
        if len(raw) >= 200:
            ratio = len(zlib.compress(raw)) / len(raw)
            if ratio < self.settings.min_compression_ratio:
                return f"runaway repetition: the reply compresses to {ratio:.0%} of its size"

    def _echo(self, s: ChatSample) -> Optional[str]:
        reply, prompt = s.response_words, s.instruction_words
        if reply and reply == prompt:
            return "the reply repeats the prompt"
        if len(reply) < 8 or len(prompt) < 8:
            return None
        reply_grams, prompt_grams = set(ngrams(reply, 4)), set(ngrams(prompt, 4))
        shared = reply_grams & prompt_grams
        limit = self.settings.echo_share
        if len(shared) < limit * len(reply_grams) or len(shared) < limit * len(prompt_grams):
            return None
        # Every part of the prompt, the request included, must be in the reply: an edit of a long text
        # (text modification) repeats the text but not the instruction before it.
        for part in paragraphs(s.instruction):
            grams = set(ngrams(words(part), 4))
            if grams and len(grams & reply_grams) < 0.5 * len(grams):
                return None
        return "the reply repeats the prompt"

    def _gibberish(self, s: ChatSample) -> Optional[str]:
        latin = _LATIN_WORD.findall(s.response)
        if len(latin) >= 10:
            odd = sum(1 for w in latin if not _VOWEL.search(w) or _CONSONANT_RUN.search(w))
            if odd / len(latin) > self.settings.unpronounceable_share:
                return f"gibberish: {odd} of {len(latin)} words are unpronounceable"

    def _copied_prompt(self, s: ChatSample) -> Optional[str]:
        told, names = prompt_phrases(self.settings.skills_dir, self.settings.copied_words)
        for part, text, tokens in (("reply", s.response, s.response_words),
                                   ("instruction", s.instruction, s.instruction_words)):
            for name in _PLACEHOLDER.findall(text):
                if name in names:
                    return f"unfilled template placeholder ${name} in the {part}"
            for gram in ngrams(tokens, self.settings.copied_words):
                if gram in told:
                    return f"copies the agents' prompt or field descriptions in the {part}: \"{' '.join(gram)}\""
