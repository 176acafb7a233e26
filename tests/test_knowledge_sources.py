"""Connectors on their own: folder (md/txt/html/pdf, bad files, big files), Slack exports, web pages."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from bot.errors import UserError
from knowledge.sources import Found, SourceInfo, kinds, make_connector
from knowledge.sources.text import decode_pieces
from tests.conftest import DATASETS  # noqa: E402
from tests.fakes.web_server import FakeWeb


def text_pdf(text: str) -> bytes:
    """A minimal one-page PDF whose page shows `text` (pypdf extracts it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = io.BytesIO(), []
    out.write(b"%PDF-1.4\n")
    for i, obj in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref))
    return out.getvalue()


def encrypted_pdf(text: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf(text))))
    writer.encrypt("secret", algorithm="AES-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


async def scan(kind: str, config: dict, cursor: dict | None = None) -> list[Found]:
    conn = make_connector(kind, config, SourceInfo("test"))
    return [f async for f in conn.scan(cursor or {})]


def test_kinds_are_registered():
    assert {"folder", "slack_export", "web"} <= set(kinds())
    with pytest.raises(UserError, match="Unknown source kind"):
        make_connector("ftp", {}, SourceInfo("x"))


async def test_folder_reads_each_format_and_skips_bad_pdfs(tmp_path: Path):
    (tmp_path / "guide.md").write_text("# The Guide\n\nHello markdown.\n")
    (tmp_path / "notes.txt").write_text("plain notes")
    (tmp_path / "page.html").write_text("<html><head><title>Page</title><style>x{}</style></head>"
                                        "<body><h2>Part</h2><p>Para &amp; text</p></body></html>")
    (tmp_path / "latin.txt").write_bytes("café crème à la carte — “quoted”".encode("cp1252"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "paper.pdf").write_bytes(text_pdf("Quarterly revenue grew"))
    (tmp_path / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage\n%%EOF")
    (tmp_path / "locked.pdf").write_bytes(encrypted_pdf("Top secret"))
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    found = {f.external_id: f for f in await scan("folder", {"path": str(tmp_path)})}
    assert set(found) == {"guide.md", "notes.txt", "page.html", "latin.txt", "sub/paper.pdf", "corrupt.pdf",
                          "locked.pdf"}
    assert found["guide.md"].doc.title == "The Guide"
    assert found["page.html"].doc.title == "Page"
    assert found["page.html"].doc.text == "## Part\n\nPara & text"
    assert found["latin.txt"].doc.text == "café crème à la carte — “quoted”"
    assert found["latin.txt"].doc.meta["encoding"] == "cp1252"
    assert "Quarterly revenue grew" in found["sub/paper.pdf"].doc.text
    assert "corrupt PDF" in found["corrupt.pdf"].error
    assert "encrypted" in found["locked.pdf"].error
    assert found["guide.md"].doc.acl == ("public",)
    # the second scan with the cursor of the first opens nothing: unchanged files come back without text
    cursor = {"docs": {}}
    for f in found.values():
        cursor["docs"].update(f.cursor.get("docs", {}))
    again = {f.external_id: f for f in await scan("folder", {"path": str(tmp_path)}, cursor)}
    assert again["guide.md"].doc is None and again["guide.md"].error is None
    assert again["locked.pdf"].error  # a skipped file is retried, not remembered


async def test_missing_folder_and_bad_config_are_clear_errors(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        await scan("folder", {"path": str(tmp_path / "nope")})
    with pytest.raises(UserError, match="needs path"):
        make_connector("folder", {}, SourceInfo("x"))
    with pytest.raises(UserError, match="Bad ACL principal"):
        make_connector("folder", {"path": ".", "acl": "everyone"}, SourceInfo("x"))


async def test_fifty_megabyte_file_is_read_with_bounded_memory(tmp_path: Path):
    big = tmp_path / "big.txt"
    line = b"All work and no play makes Jack a dull boy. " * 20 + b"\n"
    with open(big, "wb") as fh:
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            fh.write(line)
    assert big.stat().st_size >= 50 * 1024 * 1024
    tracemalloc.start()
    try:
        found = await scan("folder", {"path": str(tmp_path), "max_chars": 200_000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    doc = found[0].doc
    assert len(doc.text) == 200_000
    assert "truncated" in doc.meta["note"]
    assert peak < 8 * 1024 * 1024, f"peak {peak:,} bytes"


def test_decode_fallbacks():
    assert decode_pieces(["héllo".encode()], cap=100)[:2] == ("héllo", "utf-8")
    assert decode_pieces(["héllo".encode("utf-16")], cap=100)[:2] == ("héllo", "utf-16")
    assert decode_pieces([b"\x81\x8d caf\xe9"], cap=100)[1] == "latin-1"
    # a multi-byte character split across pieces survives
    data = "ü" * 10
    raw = data.encode()
    assert decode_pieces([raw[:3], raw[3:]], cap=100)[0] == data


async def test_houston_export_one_document_per_channel_day():
    path = DATASETS / "slack_export_houstondatavis" / "export"
    found = await scan("slack_export", {"path": str(path)})
    docs = [f.doc for f in found if f.doc]
    assert not [f for f in found if f.error]
    assert not [d for d in docs if "/thread/" in d.external_id]  # pre-threads era
    day_files = {(p.parent.name, p.stem) for p in path.glob("*/*.json")}
    assert len(day_files) == 375
    assert len(docs) == 237  # the 138 day files holding only joins/leaves/topic changes make no document
    assert all(d.acl == ("public",) for d in docs)
    general = next(d for d in docs if d.title.startswith("#general "))
    assert general.meta["channel"].startswith("C") and general.text.startswith("[20")
    assert "<@U" not in "".join(d.text for d in docs)  # mentions resolved to names


async def test_r_contributors_export_groups_threads():
    path = DATASETS / "slack_export_r_contributors" / "export"
    found = await scan("slack_export", {"path": str(path)})
    skipped = [f for f in found if f.error]
    assert {f.external_id for f in skipped} >= {"unlisted:gsod", "unlisted:outreachy"}
    assert len(skipped) == 13
    threads = [f.doc for f in found if f.doc and "/thread/" in f.doc.external_id]
    assert len(threads) >= 400
    parents = {}
    for p in path.glob("*/*.json"):
        if p.name[:4].isdigit():
            for m in json.loads(p.read_text()):
                if m.get("reply_count") and m.get("thread_ts") == m["ts"]:
                    parents[m["thread_ts"]] = m["reply_count"]
    # a thread with replies on later days is still one document holding all its replies
    multi = [t for t in threads if t.meta["messages"] > 3]
    assert multi
    t = multi[0]
    assert t.meta["messages"] <= parents.get(t.meta["thread_ts"], 10**6) + 1
    assert len({d.external_id for d in threads}) == len(threads)
    everything = await scan("slack_export", {"path": str(path), "unlisted": "public"})
    assert not [f for f in everything if f.error]
    assert len([f for f in everything if f.doc]) > len([f for f in found if f.doc])


async def test_private_channels_and_dms_get_restricted_acls(tmp_path: Path):
    zpath = tmp_path / "export.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("Acme Slack export/channels.json", json.dumps([{"id": "C1", "name": "general"}]))
        z.writestr("Acme Slack export/groups.json", json.dumps([{"id": "G9", "name": "hr"}]))
        z.writestr("Acme Slack export/mpims.json", json.dumps([{"id": "G7", "name": "mpdm-a--b-1",
                                                               "members": ["UA", "UB"]}]))
        z.writestr("Acme Slack export/users.json", json.dumps([{"id": "UA", "name": "ann", "profile":
                                                               {"display_name": "Ann"}}, {"id": "UB", "name": "bob"}]))
        z.writestr("Acme Slack export/general/2024-01-02.json", json.dumps([
            {"ts": "1704200000.000100", "user": "UA", "text": "hello <@UB>"},
            {"ts": "1704200001.000100", "user": "UB", "text": "question?", "thread_ts": "1704200001.000100",
             "reply_count": 1},
            {"ts": "1704200002.000100", "user": "UB", "text": "joined", "subtype": "channel_join"}]))
        z.writestr("Acme Slack export/general/2024-01-03.json", json.dumps([
            {"ts": "1704290000.000100", "user": "UA", "text": "answer", "thread_ts": "1704200001.000100",
             "parent_user_id": "UB"}]))
        z.writestr("Acme Slack export/hr/2024-01-02.json", json.dumps([
            {"ts": "1704200000.000200", "user": "UA", "text": "salary bands &amp; reviews"}]))
        z.writestr("Acme Slack export/mpdm-a--b-1/2024-01-02.json", json.dumps([
            {"ts": "1704200000.000300", "user": "UB", "text": "psst"}]))
    docs = {f.external_id: f.doc for f in await scan("slack_export", {"path": str(zpath)})}
    assert set(docs) == {"C1/2024-01-02", "C1/thread/1704200001.000100", "G9/2024-01-02", "G7/2024-01-02"}
    assert docs["C1/2024-01-02"].acl == ("public",)
    assert "Ann: hello @bob" in docs["C1/2024-01-02"].text and "joined" not in docs["C1/2024-01-02"].text
    thread = docs["C1/thread/1704200001.000100"]
    assert thread.title == "#general thread: question?"
    assert thread.text.splitlines()[1].endswith("Ann: answer")  # the reply from the next day
    assert docs["G9/2024-01-02"].acl == ("channel:slack:G9",)
    assert "salary bands & reviews" in docs["G9/2024-01-02"].text
    assert docs["G7/2024-01-02"].acl == ("channel:slack:G7", "user:slack:UA", "user:slack:UB")
    with pytest.raises(UserError, match="not a Slack export"):
        empty = tmp_path / "empty.zip"
        zipfile.ZipFile(empty, "w").close()
        await scan("slack_export", {"path": str(empty)})


async def test_web_pages_with_etags_and_errors():
    async with FakeWeb() as web:
        web.pages["/faq"] = ("<html><title>FAQ</title><body><h1>FAQ</h1><p>Reset your password "
                             "in settings.</p></body></html>", "text/html; charset=utf-8")
        web.pages["/notes.txt"] = ("plain text notes", "text/plain")
        urls = [web.url + "/faq", web.url + "/notes.txt", web.url + "/gone"]
        found = {f.external_id: f for f in await scan("web", {"urls": ",".join(urls)})}
        assert found[urls[0]].doc.title == "FAQ"
        assert "Reset your password in settings." in found[urls[0]].doc.text
        assert found[urls[1]].doc.text == "plain text notes"
        assert found[urls[2]].error == "HTTP 404"
        cursor = {"docs": {}}
        for f in found.values():
            cursor["docs"].update(f.cursor.get("docs", {}))
        again = {f.external_id: f for f in await scan("web", {"urls": urls}, cursor)}
        assert again[urls[0]].doc is None and again[urls[0]].error is None  # 304: unchanged
        assert web.requests[-3][1] is not None  # sent If-None-Match
    with pytest.raises(UserError, match="needs urls"):
        make_connector("web", {}, SourceInfo("x"))
