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


# Function words carry no claim: support is measured on the other words. English only (the corpus's
# language); a reply in another language is measured on all its words, which only makes support easier.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours yourself yourselves
""".split())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def support(claim: str, source: str, n: int = 1) -> float:
    """The share of `claim`'s content-word n-grams that occur in `source` (1.0 for a claim with no
    content words: nothing to support). n-grams run over the content words, so "the capital of France"
    and "France's capital" differ only in order."""
    grams = ngrams(content_words(claim), n)
    if not grams:
        return 1.0
    found = set(ngrams(content_words(source), n))
    return sum(g in found for g in grams) / len(grams)
