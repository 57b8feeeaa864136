"""Seed dedup at collection: a chunk that repeats one already collected (the same page saved twice, a
mirrored README) becomes a Skipped duplicate naming the chunk it repeats, and is not run.

Exact: the same normalised text (text.normalise: NFKC, case-folded, punctuation and spacing dropped).
Near: MinHash LSH over word 3-grams, confirmed by the two signatures' estimated Jaccard >= `threshold`
(0.8: a copy with a changed line or a different header stays above it; two different pages about one
topic share far fewer 3-grams). Collection always starts from scratch (Registry.add_corpus), so the
index lives in memory for one collection: 16 bytes a chunk for the exact hashes, num_perm x 8 bytes
for a signature plus datasketch's band entries."""

from __future__ import annotations

from typing import Iterable, Iterator

import xxhash
from datasketch import MinHash, MinHashLSH

from teachgraph.gates.text import ngrams, words
from teachgraph.seeds import Chunk, Skipped

SHINGLE_WORDS = 3


class SeedDedup:
    def __init__(self, threshold: float = 0.8, num_perm: int = 64):
        self.threshold, self.num_perm = threshold, num_perm
        self._exact: dict[bytes, str] = {}
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[str, MinHash] = {}
        self._template = MinHash(num_perm=num_perm, seed=1, hashfunc=xxhash.xxh32_intdigest)

    def duplicate_of(self, chunk: Chunk) -> tuple[str, str] | None:
        """(the collected chunk's id, why) if `chunk` repeats one; else None, and it is remembered."""
        tokens = words(chunk.text)
        key = xxhash.xxh3_128_digest(" ".join(tokens).encode("utf-8"))
        if key in self._exact:
            if self._exact[key] == chunk.id:   # the same file listed twice: add_corpus keeps one, silently
                return None
            return self._exact[key], "duplicate seed: the same text as another chunk"
        signature = MinHash(num_perm=self.num_perm, seed=1, hashfunc=xxhash.xxh32_intdigest,
                            permutations=self._template.permutations, scheme=self._template.scheme)
        signature.update_batch([" ".join(g).encode("utf-8") for g in ngrams(tokens, SHINGLE_WORDS)])
        for candidate in sorted(self._lsh.query(signature)):
            similarity = signature.jaccard(self._signatures[candidate])
            if similarity >= self.threshold:
                return candidate, f"near-duplicate seed: word 3-gram Jaccard ~{similarity:.2f} with another chunk"
        self._exact[key] = chunk.id
        if chunk.id not in self._signatures:
            self._lsh.insert(chunk.id, signature)
            self._signatures[chunk.id] = signature
        return None

    def filter(self, items: Iterable[Chunk | Skipped]) -> Iterator[Chunk | Skipped]:
        for item in items:
            if isinstance(item, Chunk):
                found = self.duplicate_of(item)
                if found is not None:
                    original, why = found
                    yield Skipped(f"{item.source} (chunk {item.index})", f"{why} ({original})", original)
                    continue
            yield item
