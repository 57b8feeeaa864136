"""Seed collection: files and folders -> documents -> chunks -> passages.

Anything that cannot be read as text is skipped with a reason, never silently dropped (hidden
files and folders, such as .git, are the one exception: they are not part of a corpus). Corpora
come from anywhere, so nothing here trusts them: folders are walked without recursion and without
following directory symlinks (no depth or loop can break the walk), file symlinks are followed only
to targets inside the seed paths (a link to ~/.aws/credentials would send it to the endpoint), only
regular files are opened (a FIFO would block forever), and text that SQLite, JSON or the model cannot
carry is refused."""

from __future__ import annotations

import codecs
import errno
import hashlib
import itertools
import json
import os
import re
import stat
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Iterator

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
CODE_SUFFIXES = {".py", ".js", ".ts", ".jsx", ".tsx", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".go",
                 ".rs", ".rb", ".php", ".sh", ".sql", ".kt", ".scala", ".swift", ".cs", ".lua", ".r",
                 ".toml", ".yaml", ".yml", ".ini", ".cfg"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | CODE_SUFFIXES | JSONL_SUFFIXES
MAX_FILE_BYTES = 50 * 1024 * 1024
CHUNK_CHARS = 1200
MIN_CHUNK_CHARS = 200


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str        # path, plus "#line N" for .jsonl records
    index: int         # chunk number within the source
    title: str
    text: str
    kind: str          # "text" or "code"


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str
    duplicate_of: str | None = None   # a duplicate seed chunk: the id of the chunk it repeats


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "tr", "pre", "section"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> tuple[str, str]:
    parser = _HTMLText()
    parser.feed(markup)
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    return parser.title.strip(), re.sub(r"\n\s*\n+", "\n\n", text).strip()


def display(path: Path | str) -> str:
    """A path as one printable line: undecodable bytes and control characters are escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def abbreviate(text: str, limit: int = 240) -> str:
    """For messages: a path thousands of characters long is kept whole in the registry, not on screen."""
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a seed file, or None if it is a regular file."""
    try:
        mode = path.stat().st_mode  # follows a file symlink to its target
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return "broken symlink"
        return exc.strerror or str(exc)
    return None if stat.S_ISREG(mode) else "not a regular file (device, FIFO or socket)"


def iter_files(paths: Iterable[Path]) -> Iterator[Path | Skipped]:
    """The files of `paths`. A file symlink found in a folder is read only if its target is inside
    one of `paths` (a corpus's notes.txt -> ~/.aws/credentials must not be sent to the endpoint);
    a path given itself is read wherever it points: the user named it."""
    paths = list(paths)
    roots = [os.path.realpath(path) for path in paths]
    for path in paths:
        if not os.path.lexists(path):
            yield Skipped(display(path), "no such file or directory")
        elif path.is_dir():
            yield from _walk(path, roots)
        elif problem := file_problem(path):
            yield Skipped(display(path), problem)
        else:
            yield path


def _inside(target: str, roots: list[str]) -> bool:
    return any(target == root or target.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _walk(root: Path, roots: list[str]) -> Iterator[Path | Skipped]:
    """Files under `root` in sorted order, depth first, with an explicit stack (no recursion limit)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Skipped(display(folder), f"cannot list folder: {exc.strerror or exc}")
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                linked_dir = not is_dir and entry.is_symlink() and entry.is_dir()
            except OSError:
                is_dir = linked_dir = False
            if is_dir:
                subfolders.append(path)
            elif linked_dir:
                yield Skipped(display(path), "symlink to a folder (not followed)")
            elif problem := file_problem(path):
                yield Skipped(display(path), problem)
            elif entry.is_symlink() and not _inside(os.path.realpath(path), roots):
                yield Skipped(display(path), "symlink to a file outside the seed paths (not followed)")
            else:
                yield path
        stack.extend(reversed(subfolders))


def _refuse_large(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"too large ({size} bytes, limit {MAX_FILE_BYTES})")


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _refuse_binary(data: bytes, offset: int = 0) -> None:
    """`data` starts at byte `offset` of its file; a NUL byte makes the file binary, unless the file
    starts with a UTF-16 or UTF-32 byte order mark (their text is full of NUL bytes): then say so."""
    for bom, encoding in _WIDE_BOMS if offset == 0 else ():
        if data.startswith(bom):
            raise ValueError(f"{encoding} text is not supported; convert it to UTF-8 "
                             f"(iconv -f {encoding} -t UTF-8)")
    nul = data.find(b"\x00")
    if nul >= 0:
        at = offset + nul
        raise ValueError("binary file" if at < 8192 else f"binary file (NUL byte at offset {at})")


def _read_text(path: Path) -> str:
    _refuse_large(path)
    with path.open("rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"too large (over {MAX_FILE_BYTES} bytes)")
    _refuse_binary(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise ValueError("empty file")
    return text


def _check_text(path: Path, chunk: int = 1 << 20) -> None:
    """_read_text's checks without holding the file: for JSON Lines, which is then read a line at a
    time, so a corpus of millions of records never sits in memory whole (a 23 MB file read whole
    raised peak RSS by 67 MB: bytes, text and the list of lines)."""
    _refuse_large(path)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset, has_text = 0, False
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            if offset + len(data) > MAX_FILE_BYTES:
                raise ValueError(f"too large (over {MAX_FILE_BYTES} bytes)")
            _refuse_binary(data, offset)
            pending = len(decoder.getstate()[0])
            try:
                has_text = bool(decoder.decode(data).strip()) or has_text
            except UnicodeDecodeError as exc:
                raise ValueError(f"not UTF-8 text (byte {offset - pending + exc.start})") from None
            offset += len(data)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {offset - len(decoder.getstate()[0]) + exc.start})") from None
    if not has_text:
        raise ValueError("empty file")


def _lines(path: Path) -> Iterator[str]:
    """The file's records, read a line at a time. JSON Lines records end at "\n" only (a "\r" before
    it is dropped): str.splitlines() also splits at U+2028, U+0085 and form feeds, which a JSON string
    may hold raw (json.dumps(ensure_ascii=False) writes them so), cutting one record in two."""
    # errors="replace": the file passed _check_text just before; one changed since must not crash a run
    with path.open(encoding="utf-8-sig", errors="replace", newline="\n") as fh:
        for line in fh:
            yield line.removesuffix("\n").removesuffix("\r")


def _unusable_text(text: str) -> str | None:
    """Text decoded from JSON escapes may hold what no UTF-8 file can: say why it cannot be a seed."""
    if "\x00" in text:
        return "text contains NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text is not valid Unicode (lone surrogate)"
    return None


def _title_from(path: Path, text: str) -> str:
    for line in text.splitlines()[:5]:
        heading = line.strip().lstrip("#").strip()
        if heading and len(heading) <= 100 and not line.startswith(("import ", "from ", "\"\"\"", "'''")):
            return heading
    return display(path.stem).replace("_", " ")


def read_documents(path: Path) -> Iterator[tuple[str, str, str, str] | Skipped]:
    """(source, title, text, kind) per document in `path`, or Skipped entries."""
    suffix = path.suffix.lower()
    name = display(path)
    if suffix not in SUPPORTED:
        yield Skipped(name, f"unsupported file type {display(suffix) or '(none)'}")
        return
    try:
        if suffix in JSONL_SUFFIXES:
            _check_text(path)   # then read a line at a time below
        else:
            text = _read_text(path)
    except (OSError, ValueError) as exc:
        yield Skipped(name, getattr(exc, "strerror", None) or str(exc))
        return
    if suffix in JSONL_SUFFIXES:
        for number, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            source = f"{name}#line{number}"
            try:
                record = json.loads(line)
                body = record.get("text") or record.get("content") if isinstance(record, dict) else None
            except json.JSONDecodeError as exc:
                yield Skipped(source, f"malformed JSON: {exc.msg}")
                continue
            except RecursionError:
                yield Skipped(source, "malformed JSON: nested too deeply")
                continue
            if not isinstance(body, str) or not body.strip():
                yield Skipped(source, "no non-empty 'text' field")
                continue
            title = str(record.get("title") or record.get("id") or path.stem)[:200]
            if problem := _unusable_text(body) or _unusable_text(title):
                yield Skipped(source, problem)
                continue
            yield source, title, body, "text"
    elif suffix in HTML_SUFFIXES:
        title, body = html_to_text(text)
        if not body:
            yield Skipped(name, "no text in HTML")
            return
        yield name, title or display(path.stem), body, "text"
    else:
        kind = "code" if suffix in CODE_SUFFIXES else "text"
        title = display(path.name) if kind == "code" else _title_from(path, text)
        yield name, title, text, kind


_SPACES = re.compile(" *")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # where str.splitlines() breaks
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _parts(text: str, separator: re.Pattern) -> Iterator[str]:
    """re.split(separator, text), lazily."""
    start = 0
    for match in separator.finditer(text):
        yield text[start:match.start()]
        start = match.end()
    yield text[start:]


def _blocks(text: str) -> Iterator[str]:
    """The paragraphs of `text`, stripped and non-empty."""
    return (block for part in _parts(text, _PARAGRAPH_BREAK) if (block := part.strip()))


def _pieces(text: str, limit: int) -> Iterator[str]:
    """Paragraphs (then lines, then sentences) of at most `limit` chars, in order."""
    for block in _blocks(text):
        if len(block) <= limit:
            yield block
            continue
        # a stripped block ends with no line break, so splitting at them gives block.splitlines()
        units = _parts(block, _LINE_BREAK if "\n" in block else _SENTENCE_END)
        current = ""
        for unit in units:
            if len(unit) > limit and current:  # keep the text in order: flush before cutting
                yield current
                current = ""
            # one enormous line or sentence: cut at a space if there is one. `start` moves along the
            # unit; slicing off the rest at each cut would copy it, quadratic in the unit's length.
            start = 0
            while len(unit) - start > limit:
                cut = unit.rfind(" ", start + limit // 2, start + limit)
                cut = cut if cut > start else start + limit
                yield unit[start:cut]
                start = _SPACES.match(unit, cut).end()
            unit = unit[start:] if start else unit
            if current and len(current) + len(unit) + 1 > limit:
                yield current
                current = ""
            current = f"{current}\n{unit}" if current else unit
        if current:
            yield current


def _split(text: str, limit: int) -> Iterator[str]:
    """Greedy packing of _pieces into pieces of <= limit chars, lazily."""
    last = None
    for piece in _pieces(text, limit):
        if last is not None and len(last) + len(piece) + 2 <= limit:
            last = f"{last}\n\n{piece}"
        else:
            if last is not None:
                yield last
            last = piece
    if last is not None:
        yield last


def chunk_text(text: str, limit: int = CHUNK_CHARS) -> Iterator[str]:
    """Chunks of at most `limit` characters, except that a fragment shorter than MIN_CHUNK_CHARS
    (a title line, a closing remark) joins its neighbour rather than becoming a thin seed.
    Lazily: a run with --limit cuts only the chunks it uses from a large document."""
    held = None  # the last chunk, held back: a short fragment at the very end joins it
    carry = ""
    for piece in _split(text, limit):
        piece = f"{carry}\n\n{piece}" if carry else piece
        carry = ""
        if len(piece) < MIN_CHUNK_CHARS:
            carry = piece
        else:
            if held is not None:
                yield held
            held = piece
    if carry:
        held = f"{held}\n\n{carry}" if held is not None else carry
    if held is not None:
        yield held


def split_passages(text: str, target: int) -> list[str]:
    return list(_split(text, target))


def seed_id(source: str, index: int, text: str) -> str:
    return hashlib.sha256(f"{source}\0{index}\0{text}".encode()).hexdigest()[:16]


def collect(paths: Iterable[Path], chunk_chars: int = CHUNK_CHARS) -> Iterator[Chunk | Skipped]:
    for entry in iter_files(paths):
        if isinstance(entry, Skipped):
            yield entry
            continue
        for doc in read_documents(entry):
            if isinstance(doc, Skipped):
                yield doc
                continue
            source, title, text, kind = doc
            pieces = chunk_text(text, chunk_chars)
            first = next(pieces, None)
            if first is None or len(first) < 20:  # a chunk this short is its document's only one
                yield Skipped(source, "too little text to use as a seed")
                continue
            for index, piece in enumerate(itertools.chain([first], pieces)):
                yield Chunk(seed_id(source, index, piece), source, index, title, piece, kind)
