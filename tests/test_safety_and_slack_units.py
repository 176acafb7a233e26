"""Pure parts: output safety (shared by every platform), Slack rendering and translation, the manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from bot.actions import feedback_value, parse_feedback_value
from bot.adapters import slack as slack_adapter
from bot.adapters.slack_blocks import from_slack_text, render, resolved_blocks, split_text, to_mrkdwn
from bot.adapters.slack_incoming import action_incoming, command_incoming, event_incoming, should_ignore
from bot.messages import Action, Citation, Reply
from bot.safety import ZWSP, host_allowed, neutralise_mentions, parse_allowlist, sanitize, strip_unsafe_links

ROOT = Path(__file__).resolve().parent.parent


def test_mentions_are_neutralised_on_slack_and_discord() -> None:
    text = neutralise_mentions("<!channel> <!here> <!everyone> <!subteam^S1|@devs> <@U1> <@U2|bob> <@123> "
                               "<@!456> <@&789> @everyone @here @channel")
    for live in ("<!", "<@", "@everyone", "@here", "@channel"):
        assert live not in text
    assert text.count("@" + ZWSP) == 12
    assert "bob" in text and "devs" in text


def test_images_removed_and_links_kept_only_for_allowlisted_hosts() -> None:
    allow = parse_allowlist("docs.example.com, example.org")
    text = strip_unsafe_links("![chart](https://docs.example.com/c.png) ![x](https://evil.test/?d=1) "
                              "[ok](https://sub.example.org/a) [bad](https://evil.test/?d=2) "
                              "<https://evil.test/?d=3|slack> https://evil.test/?d=4 https://example.org/x", allow)
    assert "d=1" not in text and "d=2" not in text and "d=3" not in text and "d=4" not in text
    assert text.count("[image removed]") == 2  # images are never embedded, even from allowed hosts
    assert "[ok](https://sub.example.org/a)" in text and "https://example.org/x" in text
    assert "bad" in text and "slack" in text  # labels stay
    assert not host_allowed("https://example.org.evil.test/", allow)
    assert not host_allowed("not a url", allow)


def test_sanitize_does_both() -> None:
    assert sanitize("<!here> ![i](https://x.test/i.png)") == f"@{ZWSP}here [image removed]"


def test_mrkdwn_conversion_and_escaping() -> None:
    text = to_mrkdwn("# Plan\n**bold** *it* ~~gone~~\n- one\n[link](https://a.test/x)\n`<b>` & <!channel>\n"
                     "```\n**kept** <x>\n```")
    assert text.splitlines()[:4] == ["*Plan*", "*bold* _it_ ~gone~", "• one", "<https://a.test/x|link>"]
    assert "`&lt;b&gt;` &amp; &lt;!channel&gt;" in text
    assert "**kept** &lt;x&gt;" in text


def test_slack_text_to_plain_text() -> None:
    assert from_slack_text("<@UBOT|ladder>  hi <@U2|ann> in <#C1|general> &lt;3", "UBOT") == "hi @ann in #general <3"
    assert split_text("x" * 7000)[0] == "x" * 3000 and len(split_text("x" * 7000)) == 3


def test_render_final_answer_with_citations_footer_and_buttons() -> None:
    reply = Reply(text="See **this**. <!channel>", citations=(Citation(1, "Run|book", "https://w.test/r"),
                                                               Citation(2, "Notes")),
                  model="m1", backend="ollama", actions=(Action("deploy", "Deploy", "12", "primary"),))
    out = render(reply, feedback=feedback_value("q?", reply.citations), context="`/ladder ask q?`")
    assert "<!channel>" not in json.dumps(out) and "*this*" in out["text"]
    assert "[1] <https://w.test/r|Run¦book>  ·  [2] Notes" in out["text"]
    kinds = [b["type"] for b in out["blocks"]]
    assert kinds == ["context", "section", "context", "context", "actions"]
    assert [e["action_id"] for e in out["blocks"][-1]["elements"]] == ["deploy", "feedback_up", "feedback_down"]
    assert out["blocks"][-1]["elements"][0]["style"] == "primary"
    partial = render(Reply(text="So far", partial=True, citations=reply.citations), feedback="x")
    assert partial["text"] == "So far …" and [b["type"] for b in partial["blocks"]] == ["section"]
    long = render(Reply(text="line\n" * 40000))
    assert len(long["blocks"]) <= 50 and len(long["text"]) <= 39000


def test_resolved_blocks_drop_buttons() -> None:
    blocks = render(Reply(text="ok?", actions=(Action("confirm", "Confirm", "a1"),)))["blocks"]
    assert [b["type"] for b in resolved_blocks(blocks, "done")] == ["section", "context"]


def test_feedback_value_fits_the_limit_and_round_trips() -> None:
    cites = [Citation(i, "T" * 300, "https://w.test/" + "p" * 100) for i in range(20)]
    value = feedback_value("why? " * 1000, cites)
    assert len(value) <= 2000
    question, sources = parse_feedback_value(value)
    assert question.startswith("why?") and question.endswith("…") and sources == []
    assert parse_feedback_value(feedback_value("q", cites[:2]))[1][0]["url"].startswith("https://w.test/")
    assert parse_feedback_value("not json") == ("", [])


def test_event_translation_and_ignore_rules() -> None:
    body = {"team_id": "T9", "event_id": "Ev9"}
    reply_in_thread = {"type": "app_mention", "user": "U1", "text": "<@UB> more", "ts": "2.0", "thread_ts": "1.0",
                       "channel": "C1"}
    msg = event_incoming(body, reply_in_thread, bot_user_id="UB")
    assert (msg.text, msg.thread, msg.event_id, msg.workspace, msg.is_dm) == ("more", "1.0", "T9:Ev9", "T9", False)
    im = {"type": "message", "channel_type": "im", "user": "U1", "text": "hi", "ts": "3.0", "channel": "D1"}
    assert event_incoming(body, im, bot_user_id="UB").is_dm
    assert not should_ignore(im, bot_user_id="UB", bot_id="BB")
    assert should_ignore({**im, "user": "UB"}, bot_user_id="UB", bot_id="BB")
    assert should_ignore({**im, "bot_id": "BB"}, bot_user_id="UB", bot_id="BB", allow_bots=True)
    assert should_ignore({**im, "bot_id": "B2"}, bot_user_id="UB", bot_id="BB")
    assert not should_ignore({**im, "bot_id": "B2", "subtype": "bot_message"}, bot_user_id="UB", bot_id="BB",
                             allow_bots=True)
    assert should_ignore({**im, "subtype": "message_deleted"}, bot_user_id="UB", bot_id="BB")
    assert should_ignore({**im, "channel_type": "channel"}, bot_user_id="UB", bot_id="BB")  # only mentions there


def test_command_and_action_translation() -> None:
    cmd = command_incoming({"team_id": "T1", "channel_id": "D5", "user_id": "U1", "text": "models list",
                            "user_name": "ann"})
    assert (cmd.text, cmd.is_dm, cmd.thread, cmd.event_id) == ("/models list", True, None, None)
    pressed = action_incoming({"team": {"id": "T1"}, "user": {"id": "U2", "username": "bob"},
                               "channel": {"id": "C1"}, "message": {"ts": "5.0", "thread_ts": "4.0"}})
    assert (pressed.user, pressed.channel, pressed.thread, pressed.workspace) == ("U2", "C1", "4.0", "T1")


def test_manifest_is_yaml_with_what_the_code_handles() -> None:
    manifest = yaml.safe_load((ROOT / "slack" / "manifest.yaml").read_text())
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == [slack_adapter.SLASH]
    assert tuple(manifest["settings"]["event_subscriptions"]["bot_events"]) == slack_adapter.EVENTS
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read", "chat:write", "commands", "im:history", "channels:history", "groups:history",
        "channels:read", "groups:read", "im:read", "users:read", "files:write", "files:read"}
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True  # DMs to the bot
    # every button the adapter listens for is one bot.actions knows
    assert set(re.findall(r"\w+", slack_adapter.BUTTONS.pattern)) == {
        "feedback_up", "feedback_down", "confirm", "cancel", "deploy"}


def test_only_model_text_loses_outside_links_but_nothing_can_ping() -> None:
    bot_text = render(Reply(text="Source: https://other.test/page <!here>"))["text"]
    model_text = render(Reply(text="Source: https://other.test/page <!here>", model="m", backend="b"))["text"]
    streamed = render(Reply(text="Source: https://other.test/page", partial=True))["text"]
    assert "https://other.test/page" in bot_text and "other.test/page" not in model_text + streamed
    assert "<!here>" not in bot_text + model_text and f"@{ZWSP}here" in bot_text
