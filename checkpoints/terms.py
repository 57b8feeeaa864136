"""Which words to retrieve passages with: the rarest words of the query in the run's corpus.

FTS5 ranks every passage that matches any query word, so a query made of common words costs
time in proportion to the corpus: 115 ms of CPU per search at 20,000 seeds (measured), which
would make retrieval, not the model, the limit of a large run. The rarest words match few
passages and are also the ones that say what a text is about. How many passages hold each word
is counted per run as seeds are collected (one small upsert per batch of seeds)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable


STOPWORDS = frozenset("""a an and are as at be but by for from has have how if in into is it its of on or
that the their then there these this to was were what when where which while who why will with you your
not can does do did than also may such other more most some any each""".split())
WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{2,}")
CANDIDATES = 64      # words of the query looked up
SEARCH_TERMS = 6     # words searched for


def words(text: str, limit: int | None = None) -> list[str]:
    """Distinct lower-cased words of `text` in order, without stopwords."""
    seen: dict[str, None] = {}
    for word in WORD.findall(text.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word)
            if limit is not None and len(seen) >= limit:
                break
    return list(seen)


def count(db: Any, run_id: str, passages: Iterable[str]) -> None:
    """Add the passages' words to the run's counts (call inside the transaction that stores them).
    `db`: a checkpoints.sql database, SQLite or PostgreSQL."""
    counts: Counter[str] = Counter()
    for text in passages:
        counts.update(words(text))
    db.conn.executemany(
        """insert into terms (run_id, term, passages) values (?, ?, ?)
           on conflict (run_id, term) do update set passages = terms.passages + excluded.passages""",
        [(run_id, term, n) for term, n in counts.items()])


def rarest(db: Any, run_id: str, text: str, k: int = SEARCH_TERMS) -> list[str]:
    """Up to `k` words of `text`, rarest first. Words in a single passage are kept only if nothing
    else is left: they are usually the query's own passage, which the search excludes anyway.
    A run collected before terms were counted gets its first words, as before."""
    candidates = words(text, CANDIDATES)
    if not candidates:
        return []
    marks = ",".join("?" * len(candidates))
    found = dict(db.conn.execute(f"select term, passages from terms where run_id = ? and term in ({marks})",
                                 [run_id, *candidates]).fetchall())
    if not found:
        return candidates[:12]
    shared = sorted((w for w in found if found[w] > 1), key=found.__getitem__)
    return (shared or sorted(found, key=found.__getitem__))[:k]
