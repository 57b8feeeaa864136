"""Text normalisation and n-grams shared by the gates."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, whitespace collapsed: what "the same text" means here."""
    return " ".join(words(text))


def words(text: str) -> list[str]:
    # \w+ after NFKC and casefold: punctuation and spacing differences vanish, any script is kept.
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """Word n-grams; a text shorter than n is one n-gram of all its words (so it still has a feature)."""
    if len(tokens) < n:
        return [tuple(tokens)] if tokens else []
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def joined(grams: list[tuple[str, ...]]) -> list[bytes]:
    return [" ".join(g).encode("utf-8") for g in grams]


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def collapse_space(text: str) -> str:
    return _SPACE.sub(" ", text).strip()
