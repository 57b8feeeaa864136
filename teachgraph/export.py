"""Export runs as a dataset trainers load unchanged: a Hugging Face folder (a card and Parquet shards,
one config per skill), orca-agentinstruct-1M-v1's own layout, ShareGPT, or today's JSON Lines.

Samples stream from the registry and go out in batches (pyarrow's ParquetWriter, one open shard per
config, a new shard past `shard_bytes`), so memory does not grow with the run. A format's rows have
one fixed schema, the same in every config and every export: `load_dataset` never casts, and configs
concatenate into one training mix.

A format is a row function registered with `@register(...)`: what a sample becomes, the columns
(datasets Features) and the layout (a config per skill, orca's split per skill, or one file).

Verdicts. A sample is kept unless one of these rejects it (then only `--include-rejected` exports it,
with its verdict columns): a check in `metadata.checks` ({check, ok, detail}) that is not ok, a gate
in `metadata.gates` ({gate, verdict, reason}, verdict "pass" or "reject"), or `metadata.review`
({reviewer, verdict, reason}). Gates and reviews do not exist yet; their columns are there, empty,
with the type they will have."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from teachgraph import skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.errors import TeachgraphError
from teachgraph.extensions import Registry as Extensions

REJECT = "reject"
SHARD_BYTES = 500 * 2**20     # as datasets' push_to_hub: Arrow bytes per shard, before compression
BATCH_ROWS = 1000             # rows per Parquet row group
BATCH_BYTES = 16 * 2**20      # ...or fewer when the rows are large
SOURCES_LISTED = 20           # a card lists this many seed sources, then says how many more

EXTRA_HINT = "export needs the export extra: pip install 'teachgraph[export]'"


class ExportError(TeachgraphError, RuntimeError):
    """Bad input for an export (unknown run or format, output folder in the way): one line."""


@dataclass(frozen=True)
class Item:
    """A sample on its way out: its run, its body (the JSON Lines shape) and whether it is kept."""

    run_id: str
    sample: dict
    rejected_by: str | None   # "check python_tests", "gate dedup", "review judge"; None: kept

    @property
    def meta(self) -> dict:
        return self.sample.get("metadata") or {}


@dataclass(frozen=True)
class Format:
    name: str
    row: Callable[[Item], dict]
    features: Callable[[], Any] | None   # datasets.Features; None: JSON Lines
    layout: str                          # "configs" | "splits" | "lines"


def _format(name: str, row: Callable[[Item], dict], *, features: Callable[[], Any] | None, layout: str) -> Format:
    return Format(name, row, features, layout)


# The built-in formats below register as a plugin's would (teachgraph/extensions.py; entry-point group
# teachgraph.export_formats): `@register(name, features=..., layout=...)` on a row function.
FORMATS: Extensions[Format] = Extensions("format", _format, group="teachgraph.export_formats")
register = FORMATS.register


# ---------------------------------------------------------------- verdicts

def rejection(meta: dict) -> tuple[str, str] | None:
    """(by, reason) of the first check, gate or review in a sample's metadata that rejects it."""
    for check in meta.get("checks") or []:
        if not check.get("ok", True):
            return f"check {check.get('check')}", str(check.get("detail") or "")
    for gate in meta.get("gates") or []:
        if gate.get("verdict") == REJECT:
            return f"gate {gate.get('gate')}", str(gate.get("reason") or "")
    review = meta.get("review") or {}
    if review.get("verdict") == REJECT:
        return f"review {review.get('reviewer') or 'reviewer'}", str(review.get("reason") or "")
    return None


def rejected_by(meta: dict) -> str | None:
    found = rejection(meta)
    return found[0] if found else None


# ---------------------------------------------------------------- formats

def _struct(**fields: str) -> dict:
    from datasets import Value
    return {name: Value(dtype) for name, dtype in fields.items()}


def hf_features():
    from datasets import Features, List, Value
    tool_call = {"id": Value("string"), "type": Value("string"),
                 "function": _struct(name="string", arguments="string")}
    message = {**_struct(role="string", content="string"), "tool_calls": List(tool_call),
               **_struct(tool_call_id="string", name="string")}
    return Features({
        **_struct(id="string", skill="string", run_id="string"),
        "messages": List(message),
        "tools": Value("string"),            # JSON of the OpenAI tool definitions; null: no tools
        **_struct(task_type="string", seed_id="string", seed_source="string", transformation="string",
                  refinement_round="int32", parent_sample_id="string", model="string"),
        "checks": List(_struct(check="string", ok="bool", detail="string")),
        "gates": List(_struct(gate="string", verdict="string", reason="string")),
        "review": _struct(reviewer="string", verdict="string", reason="string"),
        "kept": Value("bool"),
    })


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _message(m: dict) -> dict:
    calls = m.get("tool_calls")
    return {"role": m["role"], "content": m.get("content"),
            "tool_calls": [{"id": c.get("id"), "type": c.get("type", "function"),
                            "function": {"name": c["function"]["name"],
                                         "arguments": _arguments(c["function"].get("arguments", {}))}}
                           for c in calls] if calls else None,
            "tool_call_id": m.get("tool_call_id"), "name": m.get("name")}


def _tools_json(sample: dict) -> str | None:
    tools = sample.get("tools")
    return None if tools is None else json.dumps(tools, ensure_ascii=False)


def _transformation(meta: dict) -> str | None:
    value = meta.get("transformation")
    return value.get("agent") if isinstance(value, dict) else value


@register("hf", features=hf_features, layout="configs")
def hf_row(item: Item) -> dict:
    s, meta = item.sample, item.meta
    review = meta.get("review")
    return {
        "id": s["id"], "skill": s["skill"], "run_id": item.run_id,
        "messages": [_message(m) for m in s["messages"]],
        "tools": _tools_json(s),
        "task_type": meta.get("task_type"), "seed_id": meta.get("seed_id"),
        "seed_source": meta.get("seed_source"), "transformation": _transformation(meta),
        "refinement_round": meta.get("refinement_round", 0), "parent_sample_id": meta.get("parent_sample_id"),
        "model": meta.get("model"),
        "checks": [{"check": c.get("check"), "ok": c.get("ok"), "detail": c.get("detail")}
                   for c in meta.get("checks") or []],
        "gates": [{"gate": g.get("gate"), "verdict": g.get("verdict"), "reason": g.get("reason")}
                  for g in meta.get("gates") or []],
        "review": {k: review.get(k) for k in ("reviewer", "verdict", "reason")} if review else None,
        "kept": item.rejected_by is None,
    }


def orca_features():
    from datasets import Features, Value
    return Features({"messages": Value("string")})


@register("orca", features=orca_features, layout="splits")
def orca_row(item: Item) -> dict:
    """orca-agentinstruct-1M-v1's one column: the conversation as a JSON string."""
    return {"messages": json.dumps(item.sample["messages"], ensure_ascii=False)}


def sharegpt_features():
    from datasets import Features, List
    return Features({**_struct(id="string", skill="string"),
                     "conversations": List(_struct(**{"from": "string", "value": "string"})),
                     **_struct(system="string", tools="string")})


SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation"}


def sharegpt_turns(messages: list[dict]) -> tuple[str, list[dict]]:
    """LLaMA-Factory's sharegpt: the system prompt apart; tool calls as a function_call turn (name and
    arguments as JSON, a list for several calls), their results as one observation turn (a JSON list
    for several), so human/observation and gpt/function_call turns alternate."""
    system = ""
    turns: list[tuple[str, list[str]]] = []
    for m in messages:
        if m["role"] == "system":
            system = m.get("content") or ""
        elif m.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": _parsed(c["function"].get("arguments"))}
                     for c in m["tool_calls"]]
            turns.append(("function_call", [json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)]))
        elif m["role"] == "tool" and turns and turns[-1][0] == "observation":
            turns[-1][1].append(m.get("content") or "")
        else:
            turns.append((SHAREGPT_ROLES[m["role"]], [m.get("content") or ""]))
    return system, [{"from": who, "value": values[0] if len(values) == 1 else json.dumps(values, ensure_ascii=False)}
                    for who, values in turns]


def _parsed(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


@register("sharegpt", features=sharegpt_features, layout="configs")
def sharegpt_row(item: Item) -> dict:
    system, turns = sharegpt_turns(item.sample["messages"])
    return {"id": item.sample["id"], "skill": item.sample["skill"], "conversations": turns, "system": system,
            "tools": _tools_json(item.sample)}


@register("jsonl", features=None, layout="lines")
def jsonl_row(item: Item) -> dict:
    """Today's file: the sample as the run wrote it."""
    return item.sample


# ---------------------------------------------------------------- reading

REVIEWER = "reviewer"   # a person's verdict from the review page (teachgraph/review)


def with_review(sample: dict, review: dict | None) -> dict:
    """The sample with a reviewer's stored verdict ({verdict: accepted|rejected, note}) as its
    `metadata.review`, the verdict rejected_by reads."""
    if review:
        verdict = REJECT if review["verdict"] == "rejected" else "accept"
        sample.setdefault("metadata", {})["review"] = {"reviewer": REVIEWER, "verdict": verdict,
                                                       "reason": review.get("note") or ""}
    return sample


def read_items(registry: Registry, run_ids: Iterable[str]) -> Iterator[Item]:
    """The runs' samples in order, each once, with their verdicts (a reviewer's included). Sample ids are
    the registry's primary key (unique across runs), so naming a run twice is what can repeat them: each
    run is read once."""
    for run_id in dict.fromkeys(run_ids):
        reviews = registry.reviews(run_id)
        for sample_id, body in registry.samples(run_id):
            sample = with_review(json.loads(body), reviews.get(sample_id))
            yield Item(run_id, sample, rejected_by(sample.get("metadata") or {}))


# ---------------------------------------------------------------- writing

@dataclass
class Group:
    """The rows of one config (or orca split): written in batches to size-bounded shards."""

    folder: Path
    prefix: str                     # file names: {prefix}-00000-of-00003.parquet
    schema: Any                     # pyarrow schema (with datasets' features in its metadata)
    shard_bytes: int
    rows: list[dict] = field(default_factory=list)
    pending_bytes: int = 0
    shards: list[Path] = field(default_factory=list)   # while writing: hidden .partial names
    files: list[Path] = field(default_factory=list)    # once closed: train-00000-of-00002.parquet ...
    writer: Any = None
    shard_written: int = 0
    num_examples: int = 0
    num_bytes: int = 0              # Arrow bytes, as datasets counts a split's size

    def add(self, row: dict, size: int) -> None:
        self.rows.append(row)
        self.pending_bytes += size
        if len(self.rows) >= BATCH_ROWS or self.pending_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        self.rows, self.pending_bytes = [], 0
        if self.writer is not None and self.shard_written + table.nbytes > self.shard_bytes:
            self.writer.close()
            self.writer = None
        if self.writer is None:
            path = self.folder / f".{self.prefix}-{len(self.shards):05d}.parquet.partial"
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
            self.shards.append(path)
            self.shard_written = 0
        self.writer.write_table(table)
        self.shard_written += table.nbytes
        self.num_examples += table.num_rows
        self.num_bytes += table.nbytes

    def close(self) -> int:
        """Finish the last shard and give the shards their final names. Returns bytes on disk."""
        self.flush()
        if self.writer is not None:
            self.writer.close()
        self.files = [self.folder / f"{self.prefix}-{index:05d}-of-{len(self.shards):05d}.parquet"
                      for index in range(len(self.shards))]
        for partial, final in zip(self.shards, self.files):
            partial.rename(final)
        return sum(path.stat().st_size for path in self.files)


@dataclass
class SkillStats:
    """What the card says about a skill, counted as rows stream past (bounded: counters of names)."""

    rows: int = 0
    task_types: Counter = field(default_factory=Counter)
    rounds: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)
    transformations: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)     # exported anyway (--include-rejected), by verdict
    tool_calls: int = 0

    def count(self, item: Item) -> None:
        meta = item.meta
        self.rows += 1
        self.task_types[meta.get("task_type") or "-"] += 1
        self.rounds[int(meta.get("refinement_round") or 0)] += 1
        self.models[meta.get("model") or "-"] += 1
        self.transformations[_transformation(meta) or "-"] += 1
        if item.rejected_by:
            self.rejected[item.rejected_by] += 1
        self.tool_calls += sum(len(m.get("tool_calls") or []) for m in item.sample["messages"])


@dataclass
class Result:
    out: Path
    format: str
    skills: dict[str, SkillStats]
    dropped: Counter               # rows left out, by verdict
    files: list[Path]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.skills.values())


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} already exists and is not an empty folder; export writes a new one")


def export(registry: Registry, run_ids: list[str], out: Path, *, format: str = "hf",
           include_rejected: bool = False, license: str | None = None, language: str = "en",
           shard_bytes: int = SHARD_BYTES) -> Result:
    """Write the runs' samples to `out` in `format`. Raises ExportError on bad input."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r} ({', '.join(FORMATS.in_order())})")
    if not run_ids:
        raise ExportError("name at least one run to export (see: python cli.py runs list)")
    missing = [r for r in run_ids if registry.run(r) is None]
    if missing:
        raise ExportError(f"no run {missing[0]!r} (see: python cli.py runs list)")
    if not any(registry.counts(r)["samples"] for r in run_ids):
        raise ExportError(f"nothing to export: {', '.join(dict.fromkeys(run_ids))} made no samples "
                          f"(see: python cli.py runs show {run_ids[0]})")
    _check_out(out)
    try:
        import pyarrow  # noqa: F401
        import datasets  # noqa: F401
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ExportError(EXTRA_HINT) from None
    fmt = FORMATS.get(format)
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, SkillStats] = defaultdict(SkillStats)
    dropped: Counter = Counter()
    items = read_items(registry, run_ids)
    if fmt.layout == "lines":
        files = [out / "samples.jsonl"]
        with files[0].open("w", encoding="utf-8") as fh:
            for item in _kept(items, include_rejected, dropped):
                stats[item.sample["skill"]].count(item)
                fh.write(json.dumps(fmt.row(item), ensure_ascii=False) + "\n")
        return Result(out, format, dict(stats), dropped, files, time.monotonic() - started)
    schema = fmt.features().arrow_schema
    groups: dict[str, Group] = {}
    for item in _kept(items, include_rejected, dropped):
        skill = item.sample["skill"]
        stats[skill].count(item)
        group = groups.get(skill)
        if group is None:
            group = groups[skill] = _group(fmt, skill, out, schema, shard_bytes)
        group.add(fmt.row(item), _approx_bytes(item.sample))
    download = {skill: group.close() for skill, group in groups.items()}
    files = sorted(p for g in groups.values() for p in g.files)
    card = dataset_card(registry, list(dict.fromkeys(run_ids)), fmt, groups, download, dict(stats), dropped,
                        license=license, language=language)
    (out / "README.md").write_text(card, encoding="utf-8")
    return Result(out, format, dict(stats), dropped, [out / "README.md", *files], time.monotonic() - started)


def _kept(items: Iterator[Item], include_rejected: bool, dropped: Counter) -> Iterator[Item]:
    for item in items:
        if item.rejected_by and not include_rejected:
            dropped[item.rejected_by] += 1
            continue
        yield item


def _approx_bytes(sample: dict) -> int:
    return sum(len(m.get("content") or "") for m in sample["messages"]) + 512


def split_name(skill: str) -> str:
    try:
        return skills.load(skill).split
    except skills.SkillError:
        return skill


def _group(fmt: Format, skill: str, out: Path, schema, shard_bytes: int) -> Group:
    if fmt.layout == "splits":  # orca: data/rc-00000-of-00001.parquet
        return Group(out / "data", split_name(skill), schema, shard_bytes)
    return Group(out / "data" / skill, "train", schema, shard_bytes)


# ---------------------------------------------------------------- the card

def size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if rows < limit:
            return name
    return "100M<n<1B"


def card_configs(fmt: Format, groups: dict[str, Group]) -> list[dict]:
    if fmt.layout == "splits":
        return [{"config_name": "default", "data_files": [
            {"split": g.prefix, "path": f"data/{g.prefix}-*.parquet"} for _, g in sorted(groups.items())]}]
    return [{"config_name": skill, "data_files": [{"split": "train", "path": f"data/{skill}/train-*.parquet"}]}
            for skill in sorted(groups)]


def _dataset_infos(fmt: Format, groups: dict[str, Group], download: dict[str, int]):
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    features = fmt.features()
    if fmt.layout == "splits":
        splits = SplitDict()
        for _, g in sorted(groups.items()):
            splits.add(SplitInfo(name=g.prefix, num_bytes=g.num_bytes, num_examples=g.num_examples))
        return DatasetInfosDict({"default": DatasetInfo(
            features=features, splits=splits, download_size=sum(download.values()),
            dataset_size=sum(g.num_bytes for g in groups.values()))})
    infos = {}
    for skill, g in sorted(groups.items()):
        splits = SplitDict()
        splits.add(SplitInfo(name="train", num_bytes=g.num_bytes, num_examples=g.num_examples))
        infos[skill] = DatasetInfo(features=features, splits=splits, download_size=download[skill],
                                   dataset_size=g.num_bytes)
    return DatasetInfosDict(infos)


def dataset_card(registry: Registry, run_ids: list[str], fmt: Format, groups: dict[str, Group],
                 download: dict[str, int], stats: dict[str, SkillStats], dropped: Counter, *,
                 license: str | None, language: str) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData
    rows = sum(s.rows for s in stats.values())
    data = DatasetCardData(
        license=license or "unknown", language=[language], annotations_creators=["machine-generated"],
        language_creators=["machine-generated"], task_categories=["text-generation", "question-answering"],
        size_categories=[size_category(rows)], pretty_name="teachgraph synthetic instructions",
        tags=["synthetic", "agentinstruct", "teachgraph", *sorted(stats)],
        configs=card_configs(fmt, groups))
    _dataset_infos(fmt, groups, download).to_dataset_card_data(data)
    body = _card_body(registry, run_ids, fmt, stats, dropped, license=license)
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).replace("|", "\\|")[:200]


def _counts(counter: Counter) -> str:
    return ", ".join(f"{name} {n}" for name, n in counter.most_common())


def _mermaid(skill: str) -> str:
    try:
        return skills.load(skill).build_graph().compile().get_graph().draw_mermaid()
    except Exception as exc:  # a skill renamed or removed since the run: the card still says so
        return f"%% graph unavailable: {type(exc).__name__}: {exc}"


def _card_body(registry: Registry, run_ids: list[str], fmt: Format, stats: dict[str, SkillStats],
               dropped: Counter, *, license: str | None) -> str:
    runs = [registry.run(r) for r in run_ids]
    rows = sum(s.rows for s in stats.values())
    parts = [
        "# teachgraph synthetic instructions",
        "",
        "Synthetic fine-tuning data made by teachgraph, an implementation of the agentic "
        "flows of Microsoft's AgentInstruct (Mitra et al., 2024) as LangGraph graphs. For every seed (a chunk of "
        "a document or a code file) agents **transform** the seed into material suited to the skill, "
        "**generate** a task of one of the skill's task types, let a **suggester** and an **editor** make it "
        "harder over refinement rounds, and **answer** it; answers are checked where the skill has checks "
        "(sandboxed Python, answer keys, tool arguments). Each seed gives the seed task's sample (round 0) and, "
        "if refinement changed it, the refined one, linked by `parent_sample_id`. Every row was written by a "
        "model: review before training on it.",
        "",
        f"{rows} rows from {len(runs)} run(s): " + ", ".join(f"`{r['id']}`" for r in runs) + ".",
    ]
    if license is None:
        parts += ["", "**License: not set at export** (`--license`); the card says `unknown`. Choose one that "
                      "fits the seed documents and the model's terms before publishing."]
    if dropped:
        parts += ["", "Left out as rejected (`--include-rejected` keeps them, with their verdicts): "
                  + _counts(dropped) + "."]
    parts += ["", "## Runs", "", _table(
        ["run", "skill", "model", "endpoint", "rounds", "seeds", "accepted", "rejected", "failed", "samples"],
        [[r["id"], r["skill"], r["settings"].get("model"), r["settings"].get("base_url") or "embedded llama.cpp",
          r["settings"].get("rounds") if r["settings"].get("rounds") is not None else "skill default",
          *(registry.counts(r["id"])[k] for k in ("total", "accepted", "rejected", "failed", "samples"))]
         for r in runs])]
    parts += ["", "## Seed sources", ""]
    for r in runs:
        total, first = registry.seed_sources(r["id"], SOURCES_LISTED)
        listed = ", ".join(f"`{s}`" for s in first) + (f", and {total - len(first)} more" if total > len(first) else "")
        under = ", ".join(f"`{p}`" for p in r["settings"].get("seeds", []))
        parts.append(f"- `{r['id']}`: {total} files under {under}: {listed}")
    rejections: dict[str, Counter] = defaultdict(Counter)
    for r in runs:
        for row in registry.rejections(r["id"]):
            rejections[row["skill"]][f"{row['node'] or '-'}: {row['reason']}"] += row["seeds"]
    parts += ["", "## Skills", ""]
    parts.append(_table(["config" if fmt.layout == "configs" else "split", "skill", "rows", "task types",
                         "refinement rounds", "models"],
                        [[s if fmt.layout == "configs" else split_name(s), s, st.rows, len(st.task_types),
                          _counts(Counter({f"r{k}": v for k, v in sorted(st.rounds.items())})), _counts(st.models)]
                         for s, st in sorted(stats.items())]))
    for skill, st in sorted(stats.items()):
        try:
            taxonomy = len(skills.load(skill).taxonomy)
        except skills.SkillError:
            taxonomy = 0
        top, top_n = st.task_types.most_common(1)[0]
        parts += ["", f"### {skill}", "",
                  f"- rows: {st.rows}" + (f" ({st.tool_calls} tool calls)" if st.tool_calls else ""),
                  "- refinement rounds: " + _counts(Counter({f"round {k}": v for k, v in sorted(st.rounds.items())})),
                  f"- models: {_counts(st.models)}",
                  f"- diversity: {len(st.task_types)} of {taxonomy} task types, {len(st.transformations)} "
                  f"transformations; the commonest task type ({top}) is {100 * top_n / st.rows:.0f}% of rows",
                  f"- transformations: {_counts(st.transformations)}",
                  f"- task types: {_counts(st.task_types)}"]
        if rejections.get(skill):
            parts.append("- seeds rejected before a sample was made (node: reason): "
                         + "; ".join(f"{n} × {why}" for why, n in rejections[skill].most_common(10)))
        parts.append("- gates and review: none ran on these samples" if not st.rejected else
                     "- exported although rejected: " + _counts(st.rejected))
        parts += ["", "```mermaid", _mermaid(skill).strip(), "```"]
    parts += ["", "## Load it", "", "```python", "from datasets import load_dataset", ""]
    first = sorted(stats)[0] if stats else "rag"
    if fmt.layout == "splits":
        parts += [f'ds = load_dataset("REPO_OR_FOLDER", split="{split_name(first)}")  # one split per skill, '
                  "as orca-agentinstruct-1M-v1", "import json", 'messages = json.loads(ds[0]["messages"])']
    else:
        parts += [f'ds = load_dataset("REPO_OR_FOLDER", "{first}", split="train")  # one config per skill']
    parts.append("```")
    parts += ["", _format_note(fmt)]
    return "\n".join(parts) + "\n"


def _format_note(fmt: Format) -> str:
    if fmt.name == "hf":
        return ("Columns: `messages` in TRL's conversational format (tool use keeps OpenAI `tool_calls` and `tool` "
                "turns; `tools` holds the tool definitions as JSON, which TRL's SFTTrainer reads); the lineage "
                "(`seed_id`, `seed_source`, `transformation`, `refinement_round`, `parent_sample_id`, `model`); "
                "`checks`, `gates` and `review` verdicts, and `kept`. Every config has the same columns. "
                "Message fields a turn does not use are null; for chat templates that test whether a key is "
                "present, drop them with `trl.trainer.utils.remove_none_values`.")
    if fmt.name == "sharegpt":
        return ("Columns: `conversations` (`from`: human, gpt, function_call, observation; `value`), `system`, "
                "`tools`: LLaMA-Factory's sharegpt format (Axolotl reads it with a `from`/`value` mapping).")
    return ("One column, `messages`: the conversation as a JSON string, starting with a system turn, exactly as "
            "orca-agentinstruct-1M-v1, so its splits concatenate with these.")


# ---------------------------------------------------------------- the Hub

def hub_token() -> str:
    """HF_TOKEN, or a one-line error (checked before an export that is to be pushed, too)."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ExportError("--push needs a Hugging Face token in HF_TOKEN "
                          "(a write token: huggingface.co/settings/tokens)")
    return token


def push(out: Path, repo_id: str, *, private: bool = False, endpoint: str | None = None) -> str:
    """Upload an exported folder as a dataset repo. The token comes from HF_TOKEN, never stored or shown."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    token = hub_token()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=out, repo_id=repo_id, repo_type="dataset",
                                   commit_message="teachgraph export")
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ExportError(f"the Hub refused the upload to {repo_id} (HTTP {status}): "
                          f"{_redact(str(exc).splitlines()[0], token)}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise ExportError(f"cannot reach the Hub to upload {repo_id}: {type(exc).__name__}: "
                          f"{_redact(str(exc), token)}") from None
    return str(commit.commit_url) if hasattr(commit, "commit_url") else str(commit)


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***")
