"""Planted grounded and ungrounded replies and transformations over the sample corpus's text.

Grounded: what a model answering from the passage writes: its sentences, some words changed for
others (a paraphrase: 30% of the content words replaced by words that are NOT in the passage), in an
answer's frame ("According to the passage, ..."). Ungrounded: the same frame around sentences of
another document of the corpus (on-topic words, Python and SQLite both, but not this passage's facts)
or around invented facts. Transformations likewise: the seed's sentences in a debate's frame with 30%
of their content words replaced, against a debate over another document's sentences (the issue's
"debate about the Mona Lisa from a podcast transcript")."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from teachgraph.gates.text import STOPWORDS
from teachgraph.seeds import Chunk, collect

ROOT = Path(__file__).resolve().parents[1]
INVENTED = [
    "The Mona Lisa was painted by Leonardo da Vinci between 1503 and 1519 and hangs in the Louvre in Paris.",
    "The treaty was signed in Vienna in 1815 after months of negotiation between the five great powers.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen inside chloroplasts.",
    "The marathon commemorates the run of a Greek messenger from the battlefield to Athens.",
    "Mount Everest grows by about four millimetres every year as the Indian plate pushes north.",
    "The company reported record quarterly revenue, driven by strong demand for its cloud services.",
]


def chunks() -> list[Chunk]:
    return [c for c in collect([ROOT / "corpus" / "sample"]) if isinstance(c, Chunk) and len(c.text) > 400]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.split()) >= 6]


def paraphrase(sentence: str, foreign: list[str], rng: random.Random, share: float = 0.3) -> str:
    out = []
    for word in sentence.split():
        if word.lower().strip(".,:;()") not in STOPWORDS and rng.random() < share:
            out.append(rng.choice(foreign))
        else:
            out.append(word)
    return " ".join(out)


FRAMES = ["According to the passage, {0} In addition, {1}",
          "The text states that {0} It also notes that {1}",
          "{0} Therefore, {1}"]


def replies(seed: int = 3) -> list[tuple[dict, bool]]:
    """(chat sample, grounded?) pairs: one grounded and one ungrounded reply per chunk with sentences."""
    rng = random.Random(seed)
    pieces = [c for c in chunks() if len(sentences(c.text)) >= 2]
    foreign = ["notably", "essentially", "overall", "typically", "mechanism", "approach", "scenario", "aspect",
               "particular", "significant", "various", "overview", "concept", "detail", "element", "feature"]
    out = []
    for i, chunk in enumerate(pieces):
        own = sentences(chunk.text)
        frame = FRAMES[i % len(FRAMES)]
        a, b = rng.sample(own, 2)
        grounded = frame.format(paraphrase(a, foreign, rng), paraphrase(b, foreign, rng))
        other = next(p for p in pieces[i + 1:] + pieces[:i] if p.source != chunk.source)
        if i % 3 == 2:
            c, d = rng.sample(INVENTED, 2)
        else:
            c, d = rng.sample(sentences(other.text), 2)
        ungrounded = frame.format(c, d)
        question = "What does the passage say about this? Explain."
        for n, (reply, ok) in enumerate(((grounded, True), (ungrounded, False))):
            out.append(({"id": f"{i}-{n}", "messages": [
                {"role": "user", "content": f"{chunk.text}\n\n{question}"},
                {"role": "assistant", "content": reply}]}, ok))
    return out


def transformations(seed: int = 5) -> list[tuple[str, str, bool]]:
    """(seed text, transformed passage, keeps the seed's facts?) triples."""
    rng = random.Random(seed)
    pieces = [c for c in chunks() if len(sentences(c.text)) >= 3]
    foreign = ["moreover", "audience", "speaker", "opponent", "argue", "claim", "believe", "position",
               "debate", "respond", "counter", "perspective", "indeed", "surely", "consider", "point"]
    out = []
    for i, chunk in enumerate(pieces):
        def debate(lines: list[str]) -> str:
            turns = [f"{'Alex' if n % 2 == 0 else 'Sam'}: I would argue that {line}" for n, line in enumerate(lines)]
            return "Moderator: Today we debate the text.\n" + "\n".join(turns)
        own = sentences(chunk.text)[:4]
        faithful = debate([paraphrase(s, foreign, rng) for s in own])
        other = next(p for p in pieces[i + 1:] + pieces[:i] if p.source != chunk.source)
        invented = debate(sentences(other.text)[:4] if i % 2 else rng.sample(INVENTED, 3))
        out += [(chunk.text, faithful, True), (chunk.text, invented, False)]
    return out


if __name__ == "__main__":   # look at a few
    for sample, ok in replies()[:4]:
        print(ok, json.dumps(sample["messages"][1]["content"])[:300])
