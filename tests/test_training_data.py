"""Training data: formats, validation errors that name the bad line, the seeded split, the knowledge base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import UserError
from tests.conftest import DATASETS as SHARED  # noqa: E402
from training import data


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_alpaca_jsonl_becomes_chat_examples(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Add", "input": "2 and 3", "output": "5"},
        {"instruction": "Greet", "output": "Hello"},
    ])
    first, second = data.load(str(path))
    assert first.prompt == [{"role": "user", "content": "Add\n\n2 and 3"}]
    assert first.response == "5"
    assert second.prompt[0]["content"] == "Greet"


def test_malformed_jsonl_line_is_named(tmp_path):
    rows = [{"instruction": "a", "output": "b"}, "", '{"instruction": "x", "output"']
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError, match=r"bad.jsonl line 3: not valid JSON"):
        data.load(str(path))


@pytest.mark.parametrize(("row", "message"), [
    ({"instruction": "a"}, r"line 2: missing `output` \(alpaca format needs instruction and output\)"),
    ({"instruction": "a", "output": 3}, r"line 2: `output` must be a string, got int"),
    ({"messages": [{"role": "user", "content": "hi"}]}, r"line 2: record is messages format but the file started"),
    ([1, 2], r"line 2: each record must be a JSON object"),
])
def test_bad_records_name_the_first_bad_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "ok", "output": "fine"}, row, {"bad": 1}])
    with pytest.raises(UserError, match=message):
        data.load(str(path))


def test_messages_must_end_with_the_assistant(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "hello"}]},
                                              {"messages": [{"role": "user", "content": "only a question"}]}])
    with pytest.raises(UserError, match=r"m.jsonl line 2: the last message must be the assistant"):
        data.load(str(path))


def test_preference_formats_and_wrong_kind(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Is it safe?", "chosen": "Yes, with care.", "rejected": "No idea"},
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
         "rejected": "go away"},
    ])
    first, second = data.load(str(path), "preference")
    assert first.prompt == ({"role": "user", "content": "Is it safe?"},) and first.rejected == "No idea"
    assert second.chosen == "Hello!"
    with pytest.raises(UserError, match=r"line 1: fine-tuning needs alpaca or messages records"):
        data.load(str(path), "sft")
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(UserError, match=r"DPO needs prompt/chosen/rejected"):
        data.load(str(alpaca), "preference")


def test_missing_file_and_empty_data_are_clear(tmp_path):
    with pytest.raises(UserError, match=r"Dataset `.*nope.jsonl` not found"):
        data.check_source(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match=r"Give a dataset"):
        data.check_source("")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match=r"empty"):
        data.load(str(tmp_path / "empty.jsonl"))
    data.check_source("kb:handbook")  # resolved against the database at run time


def test_attachment_bytes_validated_and_saved(tmp_path):
    good = b'{"instruction": "a", "output": "b"}\n'
    path = data.save_attachment(good, "../my data.jsonl", tmp_path / "uploads")
    assert path == tmp_path / "uploads" / "my_data.jsonl" and path.read_bytes() == good
    with pytest.raises(UserError, match=r"x.jsonl line 2: not valid JSON"):
        data.save_attachment(good + b"{oops\n", "x.jsonl", tmp_path / "uploads")
    assert not (tmp_path / "uploads" / "x.jsonl").exists()
    with pytest.raises(UserError, match=r"not UTF-8"):
        data.save_attachment(b"\xff\xfe", "y.jsonl", tmp_path)


@pytest.mark.skipif(not SHARED.exists(), reason="shared datasets not mounted")
def test_llamafactory_folders_load():
    alpaca = data.load(str(SHARED / "alpaca_gpt4_en_demo_llamafactory"))
    assert len(alpaca) == 999 and alpaca[0].response
    prefs = data.load(str(SHARED / "dpo_en_demo_llamafactory"), "preference")
    assert len(prefs) == 300 and prefs[0].prompt[-1]["role"] == "user" and prefs[0].chosen != prefs[0].rejected


def test_split_is_seeded_disjoint_and_capped():
    items = list(range(100))
    train, held = data.split(items, 0.2, seed=7)
    assert (train, held) == data.split(items, 0.2, seed=7)
    assert len(held) == 20 and not set(train) & set(held) and sorted(train + held) == items
    assert data.split(items, 0.2, seed=8)[1] != held
    train, held = data.split(items, 0.5, seed=7, max_held=10)
    assert len(held) == 10 and len(train) == 90
    assert data.split([1], 0.5, seed=1) == ([1], [])


def test_thread_pairs_from_lines_and_meta():
    pair = data.thread_pair("alice: How do I reset the VPN?\nbob: Run vpn reset\nthen log in again\nalice: thanks")
    assert pair.prompt[-1]["content"] == "How do I reset the VPN?"
    assert pair.response == "Run vpn reset\nthen log in again"
    meta = {"messages": [{"user": "U1", "text": "Where is the wiki?"}, {"user": "U2", "text": "wiki.example"}]}
    assert data.thread_pair("", meta).response == "wiki.example"
    assert data.thread_pair("alice: anyone?") is None
    # the line format the Slack/Discord sources write: "[YYYY-MM-DD HH:MM] who: text", meta["messages"] a count
    synced = data.thread_pair("[2024-01-01 12:00] ann: how do I deploy?\n[2024-01-01 12:05] bob: make deploy",
                              {"messages": 2, "channel": "C1"})
    assert (synced.prompt[-1]["content"], synced.response) == ("how do I deploy?", "make deploy")


def test_knowledge_base_documents_and_threads(database_url):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from bot.db import upgrade
    from knowledge.models import Chunk, Document, Source

    upgrade(database_url, "0002")  # the knowledge tables; independent of later migrations
    engine = create_engine(database_url)
    with Session(engine) as s:
        src = Source(name="handbook", kind="folder")
        other = Source(name="secret", kind="folder")
        s.add_all([src, other])
        s.flush()
        docs = [("guide.md", "Guide", ["Install it.", "Then run it."], ["public"], src, {}),
                ("C1/1.0", "thread", ["ann: How to deploy?\nben: Use /deploy 12"], ["public"], src,
                 {"kind": "thread"}),
                ("p.md", "Private", ["hidden"], ["channel:slack:C9"], src, {}),
                ("o.md", "Other", ["elsewhere"], ["public"], other, {})]
        for ext, title, chunks, acl, source, meta in docs:
            doc = Document(source_id=source.id, external_id=ext, title=title, content_hash="h", acl=acl, meta=meta)
            s.add(doc)
            s.flush()
            for i, text in enumerate(chunks):
                s.add(Chunk(document_id=doc.id, ord=i, text=text, content_hash=f"{ext}{i}", tokens=3,
                            embedding=[0.0] * 384, acl=acl))
        s.commit()
    engine.dispose()
    texts = data.load("kb:handbook", "text", database_url=database_url)
    assert texts == ["Guide\nInstall it.\nThen run it.", "thread\nann: How to deploy?\nben: Use /deploy 12"]
    assert len(data.load("kb", "text", database_url=database_url)) == 3  # private document left out
    (pair,) = data.load("threads:handbook", "sft", database_url=database_url)
    assert (pair.prompt[-1]["content"], pair.response) == ("How to deploy?", "Use /deploy 12")
    with pytest.raises(UserError, match=r"no usable threads"):
        data.load("threads:secret", "sft", database_url=database_url)
    with pytest.raises(UserError, match=r"needs the database"):
        data.load("kb", "text")
