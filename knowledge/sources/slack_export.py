"""A Slack export (zip or folder) in Slack's standard layout.

    /sources add slack-archive kind=slack_export path=/data/export.zip

Layout: `channels.json` (public), `groups.json` (private channels), `mpims.json`/`dms.json` (group and direct
messages), `users.json`, and `<channel>/YYYY-MM-DD.json` day files. A thread is one document (its replies may
span days); other messages are grouped into one document per channel-day. ACL: public channels `public`,
private ones `channel:slack:<id>`, DMs also each member's `user:slack:<id>`. A channel folder that no listing
names is skipped and recorded (`unlisted=public` imports it as public when the export is public-only).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import zipfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from bot.errors import UserError
from knowledge.sources import Connector, Found, source
from knowledge.types import PUBLIC, SourceDocument, channel_principal, user_principal

NOISE = {"channel_join", "channel_leave", "bot_add", "bot_remove", "channel_archive", "channel_unarchive",
         "tombstone", "channel_tab_added", "channel_canvas_updated", "welcome_party"}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}\.json$")


class _Export:
    """Uniform read access to an export in a folder or a zip (the export may sit one folder down)."""

    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        names = self.zip.namelist() if self.zip else [p.relative_to(path).as_posix() for p in path.rglob("*.json")]
        roots = sorted((n.rsplit("/", 1)[0] + "/" if "/" in n else "" for n in names
                        if n == "channels.json" or n.endswith("/channels.json")), key=len)
        if not roots:
            raise UserError(f"{path} is not a Slack export: no channels.json in it.")
        self.base, self.prefix = path, roots[0]
        self.names = sorted(n[len(self.prefix):] for n in names if n.startswith(self.prefix))

    def load(self, name: str, default: Any = None) -> Any:
        full = self.prefix + name
        try:
            if self.zip:
                with self.zip.open(full) as fh:
                    return json.load(fh)
            with open(self.base / full, encoding="utf-8") as fh:
                return json.load(fh)
        except (KeyError, FileNotFoundError):
            return default

    def day_files(self) -> Iterator[tuple[str, str]]:
        for name in self.names:
            parts = PurePosixPath(name).parts
            if len(parts) == 2 and _DAY.match(parts[1]):
                yield parts[0], name

    def close(self) -> None:
        if self.zip:
            self.zip.close()


def user_names(users: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for u in users or []:
        prof = u.get("profile") or {}
        out[u["id"]] = (prof.get("display_name") or prof.get("real_name") or u.get("real_name") or u.get("name")
                        or u["id"])
    return out


def clean(text: str, names: dict[str, str], channels: dict[str, str]) -> str:
    """Slack markup -> readable text: mentions by name, links with labels, entities unescaped."""
    text = re.sub(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>", lambda m: "@" + names.get(m.group(1), m.group(1)), text)
    text = re.sub(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>",
                  lambda m: "#" + (m.group(2) or channels.get(m.group(1), "")), text)
    text = re.sub(r"<!(here|channel|everyone)(?:\|[^>]*)?>", r"@\1", text)
    text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r"\2 (\1)", text)
    text = re.sub(r"<(https?://[^>]+)>", r"\1", text)
    return html.unescape(text)


def _when(ts: str) -> datetime:
    return datetime.fromtimestamp(float(ts), UTC)


@source("slack_export")
class SlackExportSource(Connector):
    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        if not config.get("path"):
            raise UserError("A slack_export source needs path=ZIP_OR_FOLDER, e.g. "
                            "/sources add archive kind=slack_export path=/data/export.zip")
        if config.setdefault("unlisted", "skip") not in ("skip", "public"):
            raise UserError("unlisted= must be skip or public.")
        return config

    async def scan(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        for item in await asyncio.to_thread(self.read_all):
            yield item

    def read_all(self) -> list[Found]:
        path = Path(self.config["path"]).expanduser()
        if not path.exists():
            raise UserError(f"Source '{self.info.name}': {path} does not exist. Remove the source and add it "
                            "again with the right path.")
        export = _Export(path)
        try:
            return self._documents(export)
        finally:
            export.close()

    def _channels(self, export: _Export) -> dict[str, tuple[str, str, tuple[str, ...]]]:
        """folder name -> (channel id, display name, acl)."""
        out: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        for c in export.load("channels.json", []):
            out[c["name"]] = (c["id"], "#" + c["name"], (PUBLIC,))
        for c in export.load("groups.json", []):
            out[c["name"]] = (c["id"], "#" + c["name"], (channel_principal("slack", c["id"]),))
        for listing in ("mpims.json", "dms.json"):
            for c in export.load(listing, []):
                members = tuple(user_principal("slack", m) for m in c.get("members", []))
                out[c.get("name") or c["id"]] = (c["id"], c.get("name") or c["id"],
                                                  (channel_principal("slack", c["id"]), *members))
        return out

    def _documents(self, export: _Export) -> list[Found]:
        names = user_names(export.load("users.json", []))
        channels = self._channels(export)
        by_id = {cid: label.lstrip("#") for cid, label, _ in channels.values()}
        threads: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        days: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        found: list[Found] = []
        unlisted: set[str] = set()
        for folder, name in export.day_files():
            if folder not in channels:
                if self.config["unlisted"] == "skip":
                    unlisted.add(folder)
                    continue
                channels[folder] = (folder, "#" + folder, (PUBLIC,))
            for m in export.load(name, []) or []:
                if m.get("subtype") in NOISE or not (m.get("text") or m.get("files") or m.get("attachments")):
                    continue
                thread_ts = m.get("thread_ts")
                if thread_ts and (thread_ts != m["ts"] or m.get("reply_count") or m.get("replies")):
                    threads[(folder, thread_ts)].append(m)
                else:
                    days[(folder, name.rsplit("/", 1)[1][:-5])].append(m)
        for folder in sorted(unlisted):
            found.append(Found(f"unlisted:{folder}", error=f"channel folder '{folder}' is not listed in channels.json"
                                                           "/groups.json; skipped (unlisted=public imports it)"))
        for (folder, day), msgs in sorted(days.items()):
            cid, label, acl = channels[folder]
            found.append(self._doc(f"{cid}/{day}", f"{label} {day}", cid, acl, msgs, names, by_id, day=day))
        for (folder, ts), msgs in sorted(threads.items()):
            cid, label, acl = channels[folder]
            msgs.sort(key=lambda m: float(m["ts"]))
            head = clean(msgs[0].get("text", ""), names, by_id).split("\n", 1)[0][:80] if msgs[0]["ts"] == ts else ""
            found.append(self._doc(f"{cid}/thread/{ts}", f"{label} thread: {head or f'{_when(ts):%Y-%m-%d}'}",
                                   cid, acl, msgs, names, by_id, thread_ts=ts))
        return found

    def _doc(self, external_id: str, title: str, cid: str, acl: tuple[str, ...], msgs: list[dict[str, Any]],
             names: dict[str, str], by_id: dict[str, str], **meta: Any) -> Found:
        msgs = sorted({m["ts"]: m for m in msgs}.values(), key=lambda m: float(m["ts"]))
        lines = []
        for m in msgs:
            who = (names.get(m.get("user", "")) or (m.get("user_profile") or {}).get("display_name")
                   or (m.get("bot_profile") or {}).get("name") or m.get("username") or m.get("user") or "someone")
            text = clean(m.get("text", ""), names, by_id)
            for f in m.get("files") or []:
                text += f"\n[file: {f.get('title') or f.get('name') or 'attachment'}]"
            lines.append(f"[{_when(m['ts']):%Y-%m-%d %H:%M}] {who}: {text}")
        base = self.config.get("base_url")
        first = msgs[0]["ts"]
        url = f"{base.rstrip('/')}/archives/{cid}/p{first.replace('.', '')}" if base else None
        meta.update(channel=cid, messages=len(msgs), platform="slack")
        doc = SourceDocument(external_id, title, "\n".join(lines), url, tuple(sorted(acl)), meta,
                             _when(msgs[-1]["ts"]))
        return Found(external_id, doc=doc)
