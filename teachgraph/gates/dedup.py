"""Exact and near-duplicate samples.

What makes a sample a sample is its instruction's own words and its response; a passage that several
samples ask about is context, not identity. So a near-duplicate must match on BOTH:
- the response (word 1+2-gram Jaccard >= threshold), and
- the instruction's own words: the text left after removing the paragraphs of >= `context_words` words
  that the two instructions share word for word (the shared passage: every skill's template, and
  orca's, puts the passage and the question in separate paragraphs), compared by word 1+2-gram Jaccard.
Two different questions about one passage then differ where it matters (their questions, their
answers) and both stay; the same question asked twice about it, answered alike, is one sample.

Candidates come from MinHash LSH (datasketch's MinHash and band parameters) over the whole sample's
1+2-grams; the band table and every kept sample's text are in the store (SQLite), so a reopened gate
needs no rebuild and memory stays flat however many rows were kept."""

from __future__ import annotations

from typing import Optional

import xxhash
from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel, ConfigDict, Field

from teachgraph.gates.base import KEEP, ChatSample, Gate, Verdict, register
from teachgraph.gates.text import paragraphs, words


def exact_key(sample: ChatSample) -> bytes:
    """128-bit hash of the normalised instruction and response (system prompts are boilerplate)."""
    normalised = " ".join(sample.instruction_words) + "\x1f" + " ".join(sample.response_words)   # text.normalise
    return xxhash.xxh3_128_digest(normalised.encode("utf-8"))


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
        row = self.store.db.execute(f'SELECT id FROM "{self.table.name}" WHERE key = ?', [key]).fetchone()
        if row:
            return self.drop("same normalised instruction and response as a kept sample", row[0])
        return KEEP

    def admit(self, sample: ChatSample) -> None:
        key = self._pending[1] if self._pending and self._pending[0] == sample.id else exact_key(sample)
        self.store.db.execute(f'INSERT INTO "{self.table.name}" (key, id) VALUES (?, ?) ON CONFLICT DO NOTHING',
                              [key, sample.id])


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


def unigrams_bigrams(tokens: list[str]) -> set[str]:
    """Word 1- and 2-grams: on texts of a few dozen words, 3-grams make two changed words look like a
    different text (25 words, 2 changed: 3-gram Jaccard 0.54, 1+2-gram 0.78)."""
    return set(tokens) | {f"{a} {b}" for a, b in zip(tokens, tokens[1:])}


def _hash32(feature: bytes) -> int:
    return xxhash.xxh32_intdigest(feature)   # datasketch's default is SHA-1 in Python: 8x slower


@register("near_duplicate")
class NearDuplicate(Gate):
    needs_store = True

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        threshold: float = Field(0.6, gt=0, le=1,
                                 description="Jaccard both the response and the instruction's own words must reach")
        candidate_threshold: float = Field(
            0.5, gt=0, le=1, description="LSH threshold on the whole sample (recall-side, below `threshold`)")
        num_perm: int = Field(128, ge=16, le=512)
        context_words: int = Field(20, ge=5,
                                   description="a shared run this long is context, not the instruction's own words")

    def __init__(self, settings, store):
        super().__init__(settings, store)
        s = self.settings
        # its permutations are reused by every signature
        self._template = MinHash(num_perm=s.num_perm, seed=1, hashfunc=_hash32)
        # datasketch picks the bands (b, r) for the threshold; the band table lives in the store, not in
        # memory: datasketch's in-memory index costs ~6 KB a row (a Python set per band key).
        self.bands = MinHashLSH(threshold=s.candidate_threshold, num_perm=s.num_perm).hashranges
        self.kept = store.table(self.name, "kept")
        self.kept.create({"id": str, "instruction": str, "response": str}, pk="id", if_not_exists=True)
        self.band_table = store.table(self.name, "bands")
        self.band_table.create({"key": int, "kept": int}, if_not_exists=True)
        self.band_table.create_index(["key"], if_not_exists=True)
        self._pending: Optional[tuple[str, list[int]]] = None

    def signature(self, sample: ChatSample) -> MinHash:
        m = MinHash(num_perm=self.settings.num_perm, seed=1, hashfunc=_hash32,
                    permutations=self._template.permutations, scheme=self._template.scheme)
        shingles = [f.encode("utf-8") for f in unigrams_bigrams(sample.instruction_words)]
        shingles += [b"\x1f" + f.encode("utf-8") for f in unigrams_bigrams(sample.response_words)]
        if shingles:
            m.update_batch(shingles)
        return m

    def band_keys(self, sample: ChatSample) -> list[int]:
        """One key per LSH band: two samples are candidates when any band's key is equal."""
        values = self.signature(sample).hashvalues
        # >> 1: the key fits SQLite's int64
        return [xxhash.xxh64_intdigest(band.to_bytes(2, "little") + values[start:end].tobytes()) >> 1
                for band, (start, end) in enumerate(self.bands)]

    def _same(self, sample: ChatSample, instruction: str, response: str) -> Optional[str]:
        s = self.settings
        resp = jaccard(unigrams_bigrams(sample.response_words), unigrams_bigrams(words(response)))
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
        keys = self.band_keys(sample)
        self._pending = (sample.id, keys)
        rows = self.store.db.execute(
            f'SELECT id, instruction, response FROM "{self.kept.name}" WHERE rowid IN '
            f'(SELECT kept FROM "{self.band_table.name}" WHERE key IN ({",".join("?" * len(keys))})) ORDER BY rowid',
            keys).fetchall()
        for kept_id, instruction, response in rows:
            why = self._same(sample, instruction, response)
            if why:
                return self.drop(f"near-duplicate: {why}", kept_id)
        return KEEP

    def admit(self, sample: ChatSample) -> None:
        keys = self._pending[1] if self._pending and self._pending[0] == sample.id else self.band_keys(sample)
        added = self.store.db.execute(
            f'INSERT INTO "{self.kept.name}" (id, instruction, response) VALUES (?, ?, ?) '
            f'ON CONFLICT DO NOTHING RETURNING rowid', [sample.id, sample.instruction, sample.response]).fetchone()
        if added:
            self.store.db.conn.executemany(f'INSERT INTO "{self.band_table.name}" (key, kept) VALUES (?, ?)',
                                           [(key, added[0]) for key in keys])
