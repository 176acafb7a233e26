"""Pure translators from Slack payloads (events, slash commands, button presses) to `Incoming`.

The adapter fills in what needs the Web API (admin, display name, channel privacy) with `evolve`.

    >>> ev = {"type": "app_mention", "user": "U1", "text": "<@UBOT> hi", "ts": "1.2", "channel": "C1"}
    >>> msg = event_incoming(event_body_of(ev), ev, bot_user_id="UBOT")
    >>> msg.text, msg.thread, msg.event_id
    ('hi', '1.2', 'T1:Ev1')
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from bot.adapters.slack_blocks import from_slack_text, slash_text
from bot.messages import Incoming

HANDLED_SUBTYPES = (None, "file_share", "thread_broadcast")  # others are edits, joins, deletions...
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024


def event_body_of(event: dict[str, Any], event_id: str = "Ev1", team: str = "T1") -> dict[str, Any]:
    """A minimal `event_callback` envelope (doctests and unit tests)."""
    return {"team_id": team, "event_id": event_id, "event": event, "type": "event_callback"}


def should_ignore(event: dict[str, Any], *, bot_user_id: str | None, bot_id: str | None,
                  allow_bots: bool = False) -> bool:
    """Events the bot never answers: its own messages, other bots (unless allowed), edits and joins,
    and channel messages that are not mentions (those arrive as `app_mention`).

    >>> should_ignore({"type": "message", "channel_type": "im", "user": "UBOT"}, bot_user_id="UBOT", bot_id="B1")
    True
    >>> should_ignore({"type": "message", "channel_type": "im", "bot_id": "B9", "user": "U9"},
    ...               bot_user_id="UBOT", bot_id="B1", allow_bots=True)
    False
    """
    if event.get("user") and event.get("user") == bot_user_id:
        return True
    if bot_id and event.get("bot_id") == bot_id:
        return True
    if (event.get("bot_id") or event.get("subtype") == "bot_message") and not allow_bots:
        return True
    if event.get("subtype") not in HANDLED_SUBTYPES and event.get("subtype") != "bot_message":
        return True
    if event.get("type") == "message" and event.get("channel_type") != "im":
        return True
    return not event.get("user") and not event.get("bot_id")


def event_incoming(body: dict[str, Any], event: dict[str, Any], *, bot_user_id: str | None) -> Incoming:
    """A mention or DM: always answered in a thread (the message's own, or the one it is in)."""
    team = body.get("team_id") or event.get("team") or ""
    channel = event.get("channel", "")
    user = event.get("user") or event.get("bot_id", "")
    return Incoming(platform="slack", workspace=team, channel=channel, user=user,
                    text=from_slack_text(event.get("text", ""), bot_user_id),
                    thread=event.get("thread_ts") or event.get("ts"),
                    is_dm=event.get("channel_type") == "im" or channel.startswith("D"),
                    is_private_channel=event.get("channel_type") in ("group", "mpim"),
                    event_id=f"{team}:{body['event_id']}" if body.get("event_id") else None)


def command_incoming(command: dict[str, Any]) -> Incoming:
    """`/ladder models list` in a channel: the same parser as the console sees "/models list".

    >>> command_incoming({"team_id": "T1", "channel_id": "C1", "user_id": "U1", "text": "help"}).text
    '/help'
    """
    channel = command.get("channel_id", "")
    return Incoming(platform="slack", workspace=command.get("team_id", ""), channel=channel,
                    user=command.get("user_id", ""), text=slash_text(from_slack_text(command.get("text", ""))),
                    is_dm=command.get("channel_name") == "directmessage" or channel.startswith("D"),
                    is_private_channel=command.get("channel_name") == "privategroup",
                    user_name=command.get("user_name", ""))


def action_incoming(body: dict[str, Any], text: str = "") -> Incoming:
    """Who pressed a button, where: the thread of the message the button is on."""
    message = body.get("message") or {}
    container = body.get("container") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id", "")
    thread = message.get("thread_ts") or container.get("thread_ts") or message.get("ts") or container.get("message_ts")
    user = body.get("user") or {}
    return Incoming(platform="slack", workspace=(body.get("team") or {}).get("id") or user.get("team_id", ""),
                    channel=channel, user=user.get("id", ""), text=text, thread=thread,
                    is_dm=channel.startswith("D"), user_name=user.get("username") or user.get("name", ""))


def display_name(user: dict[str, Any]) -> str:
    """The name Slack shows for a user: display name, else real name, else handle.

    >>> display_name({"name": "ann", "profile": {"display_name": "", "real_name": "Ann Lee"}})
    'Ann Lee'
    """
    profile = user.get("profile") or {}
    return (profile.get("display_name") or profile.get("real_name") or user.get("real_name")
            or user.get("name") or user.get("id", ""))


def is_workspace_admin(user: dict[str, Any]) -> bool:
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))


def file_refs(event: dict[str, Any], api_url: str) -> list[tuple[str, str, str]]:
    """(name, download URL, mime) of the files shared with a message that the bot may fetch: not too big,
    and only from Slack's own hosts (or the configured API host), since the bot token goes with the request.

    >>> file_refs({"files": [{"name": "d.jsonl", "size": 9, "mimetype": "text/plain",
    ...            "url_private_download": "https://files.slack.com/F1/d.jsonl"},
    ...           {"name": "x", "size": 9, "url_private": "https://evil.test/x"}]}, "https://slack.com/api/")
    [('d.jsonl', 'https://files.slack.com/F1/d.jsonl', 'text/plain')]
    """
    trusted = {urlsplit(api_url).hostname or ""}
    refs = []
    for f in event.get("files") or []:
        url = f.get("url_private_download") or f.get("url_private") or ""
        host = urlsplit(url).hostname or ""
        if not (host in trusted or host == "slack.com" or host.endswith(".slack.com")):
            continue
        if int(f.get("size") or 0) > MAX_ATTACHMENT_BYTES:
            continue
        refs.append((f.get("name") or f.get("id", "file"), url, f.get("mimetype") or "application/octet-stream"))
    return refs
