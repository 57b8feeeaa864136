"""Exact and near-duplicate samples.

What makes a sample a sample is its instruction's own words and its response; a passage that several
samples ask about is context, not identity. So a near-duplicate must match on BOTH:
- the response (word 1+2-gram Jaccard >= threshold), and
- the instruction's own words: the text left after removing the paragraphs of >= `context_words` words
  that the two instructions share word for word (the shared passage: every skill's template, and
  orca's, puts the passage and the question in separate paragraphs), compared by word 1+2-gram Jaccard.
Two different questions about one passage then differ where it matters (their questions, their
answers) and both stay; the same question asked twice about it, answered alike, is one sample.

Candidates come from MinHash LSH (datasketch) over the whole sample's 1+2-grams; the verification above
reads the candidate's kept text from the store. The store holds every kept sample's signature and
text, and the in-memory LSH index is rebuilt from it when a gate is reopened."""

from __future__ import annotations

from typing import Optional

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel, ConfigDict, Field

from teachgraph.gates.base import KEEP, ChatSample, Gate, Verdict, register
from teachgraph.gates.text import normalise, paragraphs, words


def exact_key(sample: ChatSample) -> bytes:
    """128-bit hash of the normalised instruction and response (system prompts are boilerplate)."""
    return xxhash.xxh3_128_digest((normalise(sample.instruction) + "\x1f" + normalise(sample.response)).encode("utf-8"))


@register("exact_duplicate")
class ExactDuplicate(Gate):
    needs_store = True

    def __init__(self, settings, store):
        super().__init__(settings, store)
        self.table = store.table(self.name, "kept")
        self.table.create({"key": bytes, "id": str}, pk="key", if_not_exists=True)
        self._pending: Optional[tuple[str, bytes]] = None

    def check(self, sample: ChatSample) -> Verdict:
        key = exact_key(sample)
        self._pending = (sample.id, key)
        row = self.store.db.execute(f"SELECT id FROM [{self.table.name}] WHERE key = ?", [key]).fetchone()
        if row:
            return self.drop("same normalised instruction and response as a kept sample", row[0])
        return KEEP

    def admit(self, sample: ChatSample) -> None:
        key = self._pending[1] if self._pending and self._pending[0] == sample.id else exact_key(sample)
        self.store.db.execute(f"INSERT OR IGNORE INTO [{self.table.name}] (key, id) VALUES (?, ?)", [key, sample.id])


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def own_words(mine: str, theirs: str, context_words: int) -> tuple[list[str], list[str]]:
    """The words of both instructions outside the paragraphs of >= context_words words they share
    (the shared context). Paragraphs, not raw shared runs: a passage and the question after it are
    separate paragraphs in every skill's template, and a run would swallow the question's shared opening."""
    a = [words(p) for p in paragraphs(mine)]
    b = [words(p) for p in paragraphs(theirs)]
    shared = {tuple(p) for p in a if len(p) >= context_words} & {tuple(p) for p in b if len(p) >= context_words}
    return ([w for p in a if tuple(p) not in shared for w in p],
            [w for p in b if tuple(p) not in shared for w in p])


def unigrams_bigrams(tokens: list[str]) -> set:
    """Word 1- and 2-grams: on texts of a few dozen words, 3-grams make two changed words look like a
    different text (25 words, 2 changed: 3-gram Jaccard 0.54, 1+2-gram 0.78)."""
    return set(tokens) | set(zip(tokens, tokens[1:]))


def _encode(feature) -> bytes:
    return (feature if isinstance(feature, str) else " ".join(feature)).encode("utf-8")


@register("near_duplicate")
class NearDuplicate(Gate):
    needs_store = True

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        threshold: float = Field(0.6, gt=0, le=1, description="Jaccard both the response and the instruction's own words must reach")
        candidate_threshold: float = Field(0.5, gt=0, le=1, description="LSH threshold on the whole sample (recall-side, below `threshold`)")
        num_perm: int = Field(128, ge=16, le=512)
        context_words: int = Field(20, ge=5, description="a shared run this long is context, not the instruction's own words")

    def __init__(self, settings, store):
        super().__init__(settings, store)
        s = self.settings
        self._template = MinHash(num_perm=s.num_perm, seed=1)  # its permutations are reused by every signature
        self.lsh = MinHashLSH(threshold=s.candidate_threshold, num_perm=s.num_perm,
                              hashfunc=xxhash.xxh64_digest)  # 8-byte band keys: less memory
        self.table = store.table(self.name, "kept")
        self.table.create({"id": str, "signature": bytes, "instruction": str, "response": str},
                          pk="id", if_not_exists=True)
        for sample_id, signature in store.db.execute(f"SELECT id, signature FROM [{self.table.name}]"):
            self.lsh.insert(sample_id, self._minhash(np.frombuffer(signature, dtype=np.uint32)), check_duplication=False)
        self._pending: Optional[tuple[str, MinHash]] = None

    def _minhash(self, hashvalues: np.ndarray) -> MinHash:
        return MinHash(num_perm=self.settings.num_perm, seed=1, hashvalues=hashvalues.copy(),
                       permutations=self._template.permutations, scheme=self._template.scheme)

    def signature(self, sample: ChatSample) -> MinHash:
        m = MinHash(num_perm=self.settings.num_perm, seed=1, permutations=self._template.permutations, scheme=self._template.scheme)
        shingles = [_encode(f) for f in unigrams_bigrams(words(sample.instruction))]
        shingles += [b"\x1f" + _encode(f) for f in unigrams_bigrams(words(sample.response))]
        if shingles:
            m.update_batch(shingles)
        return m

    def _same(self, sample: ChatSample, instruction: str, response: str) -> Optional[str]:
        s = self.settings
        resp = jaccard(unigrams_bigrams(words(sample.response)), unigrams_bigrams(words(response)))
        if resp < s.threshold:
            return None
        mine, theirs = own_words(sample.instruction, instruction, s.context_words)
        if not mine and not theirs:
            inst = 1.0
        elif not mine or not theirs:
            inst = 0.0
        else:
            inst = jaccard(unigrams_bigrams(mine), unigrams_bigrams(theirs))
        if inst < s.threshold:
            return None
        return f"response Jaccard {resp:.2f}, instruction's own words Jaccard {inst:.2f} (>= {s.threshold})"

    def check(self, sample: ChatSample) -> Verdict:
        m = self.signature(sample)
        self._pending = (sample.id, m)
        candidates = sorted(self.lsh.query(m))
        if not candidates:
            return KEEP
        marks = ",".join("?" * len(candidates))
        rows = self.store.db.execute(
            f"SELECT id, instruction, response FROM [{self.table.name}] WHERE id IN ({marks}) ORDER BY rowid",
            candidates).fetchall()
        for kept_id, instruction, response in rows:
            why = self._same(sample, instruction, response)
            if why:
                return self.drop(f"near-duplicate: {why}", kept_id)
        return KEEP

    def admit(self, sample: ChatSample) -> None:
        m = self._pending[1] if self._pending and self._pending[0] == sample.id else self.signature(sample)
        self.store.db.execute(
            f"INSERT OR IGNORE INTO [{self.table.name}] (id, signature, instruction, response) VALUES (?, ?, ?, ?)",
            [sample.id, m.hashvalues.astype(np.uint32).tobytes(), sample.instruction, sample.response])
        if sample.id not in self.lsh:
            self.lsh.insert(sample.id, m, check_duplication=False)
