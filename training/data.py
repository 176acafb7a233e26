"""Training data: JSONL/JSON files (path or attachment bytes) and the knowledge base -> examples.

Formats, detected from the first record and then required of every record:
  alpaca      {"instruction", "input"?, "output"}                      -> SFT example
  messages    {"messages": [{"role", "content"}, ...]} (last = assistant) or sharegpt {"conversations": [...]}
  preference  {"prompt", "chosen", "rejected"} (strings or message lists; LLaMA-Factory's sharegpt
              {"conversations", "chosen": {"from","value"}, "rejected": {...}} too)
  text        {"text"} (or a .txt file)                                -> pretraining text
A bad record raises a `UserError` naming it: "data.jsonl line 7: missing `output` (alpaca format ...)".

    >>> sft = load_sft("/path/alpaca.jsonl"); train, held = split(sft, 0.1, seed=1337)
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import UserError

Message = dict[str, str]
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
         "model": "assistant", "bot": "assistant"}
KB_SOURCES = ("kb", "threads")


@dataclass(frozen=True)
class SFTExample:
    messages: tuple[Message, ...]  # ends with the assistant response that is trained on

    @property
    def prompt(self) -> list[Message]:
        return list(self.messages[:-1])

    @property
    def response(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class PreferenceExample:
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str


class DataError(UserError):
    """A dataset that cannot be used; the message names the file and the first bad line or item."""


# -- reading ----------------------------------------------------------------------------------------

def _records_from_text(text: str, name: str) -> list[tuple[str, Any]]:
    """(locator, record) pairs from JSON-array or JSONL text."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{name}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}).") from None
        return [(f"{name} item {i}", item) for i, item in enumerate(items, 1)]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"{name} line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{name} line {number}: not valid JSON ({err.msg} at column {err.colno}).") from None
    return out


def resolve_path(data: str) -> Path:
    """A file, or a folder holding one .json/.jsonl/.txt data file (like the LLaMA-Factory demo folders)."""
    path = Path(data).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl", ".txt") and p.is_file())
        if len(files) != 1:
            raise DataError(f"Dataset folder {path} must hold exactly one .json/.jsonl/.txt file "
                            f"(found {len(files)}).")
        return files[0]
    if not path.is_file():
        raise DataError(f"Dataset `{data}` not found: give a JSONL/JSON file path, attach one, or use kb / threads.")
    return path


def read_records(source: str | Path | bytes, name: str = "attachment") -> list[tuple[str, Any]]:
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{name}: not UTF-8 text (byte {err.start}).") from None
        return _records_from_text(text, name)
    path = resolve_path(str(source))
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".txt":
        return [(f"{path.name}", {"text": text})]
    return _records_from_text(text, path.name)


def save_attachment(content: bytes, filename: str, directory: Path, kind: str = "sft") -> Path:
    """Validate an attached dataset and store it under `directory` (what `/train ... data=<attachment>` uses)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).name) or "data.jsonl"
    parse(read_records(content, safe), kind)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / safe
    path.write_bytes(content)
    return path


# -- formats ----------------------------------------------------------------------------------------

def _need_str(rec: dict, key: str, where: str, fmt: str, optional: bool = False) -> str:
    value = rec.get(key, "" if optional else None)
    if value is None:
        raise DataError(f"{where}: missing `{key}` ({fmt} format needs {FORMAT_KEYS[fmt]}).")
    if not isinstance(value, str):
        raise DataError(f"{where}: `{key}` must be a string, got {type(value).__name__}.")
    return value


def _messages(turns: Any, where: str, key: str) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: `{key}` must be a non-empty list of messages.")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: `{key}[{i}]` must be an object with role and content.")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role not in ROLES or not isinstance(content, str):
            raise DataError(f"{where}: `{key}[{i}]` needs a role (user/assistant/system) and string content.")
        out.append({"role": ROLES[role], "content": content})
    return out


FORMAT_KEYS = {"alpaca": "instruction and output", "messages": "messages (or conversations)",
               "preference": "prompt, chosen and rejected", "text": "text"}


def detect_format(record: Any, where: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{where}: each record must be a JSON object, got {type(record).__name__}.")
    if "chosen" in record or "rejected" in record:
        return "preference"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "messages" in record or "conversations" in record:
        return "messages"
    if "text" in record:
        return "text"
    raise DataError(f"{where}: unknown record format (keys: {', '.join(sorted(record)) or 'none'}); expected "
                    "alpaca (instruction/input/output), messages, prompt/chosen/rejected or text.")


def _to_sft(rec: dict, where: str, fmt: str) -> SFTExample:
    if fmt == "alpaca":
        instruction = _need_str(rec, "instruction", where, fmt)
        extra = _need_str(rec, "input", where, fmt, optional=True)
        output = _need_str(rec, "output", where, fmt)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        if not output.strip():
            raise DataError(f"{where}: `output` is empty.")
        return SFTExample(({"role": "user", "content": prompt}, {"role": "assistant", "content": output}))
    key = "messages" if "messages" in rec else "conversations"
    msgs = _messages(rec.get(key), where, key)
    if msgs[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's answer to train on.")
    return SFTExample(tuple(msgs))


def _side(value: Any, where: str, key: str) -> str:
    if isinstance(value, dict):
        value = value.get("content", value.get("value"))
    if isinstance(value, list):
        value = _messages(value, where, key)[-1]["content"]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: `{key}` must be a non-empty string.")
    return value


def _to_preference(rec: dict, where: str) -> PreferenceExample:
    if "prompt" in rec:
        prompt = rec["prompt"]
        msgs = _messages(prompt, where, "prompt") if isinstance(prompt, list) else None
        if msgs is None:
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(f"{where}: `prompt` must be a non-empty string or message list.")
            msgs = [{"role": "user", "content": prompt}]
    elif "conversations" in rec:
        msgs = _messages(rec["conversations"], where, "conversations")
    else:
        raise DataError(f"{where}: missing `prompt` (preference format needs {FORMAT_KEYS['preference']}).")
    for key in ("chosen", "rejected"):
        if key not in rec:
            raise DataError(f"{where}: missing `{key}` (preference format needs {FORMAT_KEYS['preference']}).")
    return PreferenceExample(tuple(msgs), _side(rec["chosen"], where, "chosen"), _side(rec["rejected"], where,
                                                                                   "rejected"))


def parse(records: Sequence[tuple[str, Any]], kind: str) -> list[Any]:
    """Records -> examples of `kind` (sft | preference | text), checking every record."""
    if not records:
        raise DataError("The dataset is empty.")
    fmt = detect_format(records[0][1], records[0][0])
    out: list[Any] = []
    for where, rec in records:
        got = detect_format(rec, where)
        if got != fmt:
            raise DataError(f"{where}: record is {got} format but the file started as {fmt}.")
        if kind == "preference":
            if fmt != "preference":
                raise DataError(f"{where}: DPO needs prompt/chosen/rejected records, this file is {fmt} format.")
            out.append(_to_preference(rec, where))
        elif kind == "text":
            out.append(_need_str(rec, "text", where, fmt) if fmt == "text" else "\n".join(
                m["content"] for m in _to_sft(rec, where, fmt).messages) if fmt != "preference" else
                _to_preference(rec, where).chosen)
        else:
            if fmt not in ("alpaca", "messages"):
                raise DataError(f"{where}: fine-tuning needs alpaca or messages records, this file is {fmt} format.")
            out.append(_to_sft(rec, where, fmt))
    return out


# -- the knowledge base -----------------------------------------------------------------------------

def _sync_url(database_url: str) -> str:
    return re.sub(r"^postgresql(\+\w+)?://", "postgresql+psycopg://", database_url)


def kb_documents(database_url: str, source: str | None = None) -> list[tuple[str, dict[str, Any], str]]:
    """(title, meta, text) per document, text = its chunks in order (public documents only)."""
    from sqlalchemy import create_engine, select

    from knowledge.models import Chunk, Document, Source

    engine = create_engine(_sync_url(database_url))
    try:
        with engine.connect() as conn:
            query = (select(Document.id, Document.title, Document.meta, Chunk.text)
                     .join(Chunk, Chunk.document_id == Document.id).join(Source, Source.id == Document.source_id)
                     .where(Document.acl.any("public")).order_by(Document.id, Chunk.ord))
            if source:
                query = query.where(Source.name == source)
            docs: dict[int, tuple[str, dict[str, Any], list[str]]] = {}
            for doc_id, title, meta, text in conn.execute(query):
                docs.setdefault(doc_id, (title, meta or {}, []))[2].append(text)
    finally:
        engine.dispose()
    return [(title, meta, "\n".join(parts)) for title, meta, parts in docs.values()]


LINE = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?([^:\n]{1,64}):\s+(.+)$")


def thread_pair(text: str, meta: dict[str, Any] | None = None) -> SFTExample | None:
    """A thread -> (first message, the replies by others); `meta["messages"]` ([{user, text}]) or
    "user: text" lines. None when there is no reply to learn from."""
    msgs = (meta or {}).get("messages")
    if isinstance(msgs, list) and msgs and all(isinstance(m, dict) for m in msgs):
        turns = [(str(m.get("user", "")), str(m.get("text", ""))) for m in msgs]
    else:
        turns = []
        for line in text.splitlines():
            match = LINE.match(line)
            if match:
                turns.append((match.group(1).strip(), match.group(2).strip()))
            elif turns and line.strip():
                turns[-1] = (turns[-1][0], turns[-1][1] + "\n" + line.strip())
    if len(turns) < 2:
        return None
    asker, question = turns[0]
    answer = "\n".join(t for user, t in turns[1:] if user != asker and t.strip())
    if not question.strip() or not answer.strip():
        return None
    return SFTExample(({"role": "user", "content": question}, {"role": "assistant", "content": answer}))


def _kb(data: str) -> tuple[str, str | None] | None:
    head, _, rest = data.partition(":")
    return (head, rest or None) if head in KB_SOURCES else None


def check_source(data: str, kind: str = "sft") -> None:
    """Submit-time check that `data=` names something usable; a file is read and validated in full."""
    if not data:
        raise DataError("Give a dataset: data=PATH (JSONL/JSON), data=kb[:SOURCE] or data=threads[:SOURCE].")
    if _kb(data):
        return
    parse(read_records(data), kind)


def load(data: str, kind: str = "sft", *, database_url: str | None = None) -> list[Any]:
    """Examples of `kind` from a path or the knowledge base (`kb` documents, `threads` -> Q/A pairs)."""
    kb = _kb(data)
    if kb is None:
        return parse(read_records(data), kind)
    if not database_url:
        raise DataError(f"data={data} needs the database (DATABASE_URL) to read the knowledge base.")
    head, source = kb
    docs = kb_documents(database_url, source)
    if kind == "text":
        out: list[Any] = [f"{title}\n{text}" for title, _, text in docs]
    elif head == "threads" or kind == "sft":
        out = [p for _, meta, text in docs if (p := thread_pair(text, meta)) is not None]
    else:
        raise DataError("DPO needs prompt/chosen/rejected records from a file, not the knowledge base.")
    if not out:
        raise DataError(f"data={data}: no usable {'documents' if kind == 'text' else 'threads with replies'} found.")
    return out


def split(items: Sequence[Any], held_out: float, seed: int, max_held: int | None = None) -> tuple[list, list]:
    """Seeded shuffle -> (train, held-out); at least one training item, held-out capped at `max_held`."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_held = min(int(round(len(items) * held_out)), len(items) - 1)
    if max_held is not None:
        n_held = min(n_held, max_held)
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [items[i] for i in train], [items[i] for i in held]


def limit(items: Iterable[Any], n: int) -> list[Any]:
    items = list(items)
    return items[:n] if n else items
