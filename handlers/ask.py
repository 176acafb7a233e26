"""Questions: plain messages, mentions and `/ask`, with thread memory, personas and templates.

    /ask What is 38 multiplied by 47? template=cot
    /ask List three colours template=json schema='{"type":"array","items":{"type":"string"}}'
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonschema

from bot import channels, memory
from bot.commands import Opt
from bot.context import Context
from bot.errors import UserError
from bot.llm.base import ChatMessage, ChatModel, ChatResult
from bot.messages import Incoming, Reply, Usage
from bot.models import ChannelSettings, Turn
from bot.prompts import TEMPLATES, build_system, few_shot_messages, json_retry_message, parse_json_reply
from bot.router import command

STREAM_MIN_CHARS = 40


@command("ask", help="Ask the model (plain messages do the same)",
         usage="/ask QUESTION [template=cot|json|few-shot]",
         free_text=True, options={"template": Opt(choices=TEMPLATES),
                                  "schema": Opt(help="JSON schema for template=json"),
                                  "model": Opt(help="answer with this model once")})
async def ask(msg: Incoming, ctx: Context) -> AsyncIterator[Reply]:
    opts = msg.command.options if msg.command else {}
    question = msg.body.strip()
    if not question:
        raise UserError("Ask me something: /ask QUESTION. Type /help for commands.")
    chan = await channels.load(ctx.db, msg)
    model = await channels.chat_model(ctx.models, chan, opts.get("model"))
    if not opts.get("template"):  # tools when the channel's model calls them natively (handlers/agent.py)
        from handlers.agent import answer_with_tools

        if (tool_reply := await answer_with_tools(msg, ctx, question, model)) is not None:
            yield tool_reply
            return
        # the knowledge base, for what the reply's audience may read (knowledge/rag.py)
        from knowledge.rag import rag_audience, rag_reply

        if (audience := await rag_audience(ctx, msg, chan)) is not None:
            yield await rag_reply(ctx, msg, question, audience, model)
            return
    async for reply in answer(msg, ctx, question, template=opts.get("template"),
                              schema_text=opts.get("schema"), chan=chan, model=model):
        yield reply


async def answer(msg: Incoming, ctx: Context, question: str, *, template: str | None = None,
                 schema_text: str | None = None, extra_system: str | None = None,
                 chan: ChannelSettings | None = None, model: ChatModel | None = None) -> AsyncIterator[Reply]:
    """Answer `question` in the message's conversation; streams partial replies, saves the turns."""
    chan = chan or await channels.load(ctx.db, msg)
    model = model or await channels.chat_model(ctx.models, chan)
    schema = _schema(schema_text) if template == "json" else None
    system = build_system(chan.persona, template, schema)
    if extra_system:
        system = f"{system}\n\n{extra_system}"
    prefix = few_shot_messages(chan.examples or []) if template == "few-shot" else []
    if template == "few-shot" and not prefix:
        raise UserError("This channel has no examples yet. Add some with /examples add INPUT => OUTPUT.")

    conv = await memory.conversation_id(ctx.db, msg)
    budget = model.context_length - ctx.settings.max_answer_tokens
    fixed = model.count_tokens(system) + sum(model.count_tokens(m.content) for m in prefix)
    question, cut = memory.truncate_tokens(question, max(64, (budget - fixed) // 2), model.count_tokens)
    asked = model.count_tokens(question)
    past = memory.trim_to_budget(await memory.history(ctx.db, conv), budget - fixed - asked)
    messages = [ChatMessage("system", system), *prefix, *memory.as_messages(past), ChatMessage("user", question)]
    notice = "(Your question was too long for the model's context window; I used the start of it.)\n" if cut else ""

    if template == "json":
        result = await _json_answer(model, messages, schema or {})
        text = json.dumps(parse_json_reply(result.text), indent=2)
        yield _final(notice + f"```\n{text}\n```", result)
    else:
        result = None
        async for partial, done in _stream(model, messages, ctx.settings.stream_edit_interval_s):
            if done:
                result = done
            else:
                yield Reply(text=notice + partial, partial=True, thread=msg.thread)
        assert result is not None
        text = result.text
        yield _final(notice + text, result).evolve(thread=msg.thread)
    await memory.append(ctx.db, conv, [
        Turn(role="user", content=question, tokens=asked, user_id=msg.user),
        Turn(role="assistant", content=text, tokens=model.count_tokens(text), model=model.name),
    ])


def _final(text: str, result: ChatResult) -> Reply:
    return Reply(text=text, model=result.model, backend=result.backend, usage=result.usage,
                 latency_ms=result.latency_ms).with_footer(f"{result.model} via {result.backend}")


async def _stream(model: ChatModel, messages: list[ChatMessage],
                  interval: float) -> AsyncIterator[tuple[str, ChatResult | None]]:
    """Accumulated text, at most one update per `interval` seconds (platforms rate-limit edits)."""
    text, last = "", 0.0
    async for chunk in model.stream(messages):
        if chunk.done:
            yield text, chunk.result
            return
        text += chunk.delta
        now = time.monotonic()
        if now - last >= interval and len(text.strip()) >= STREAM_MIN_CHARS:
            last = now
            yield text, None


def _schema(schema_text: str | None) -> dict[str, Any]:
    if not schema_text:
        return {"type": "object"}
    try:
        schema = json.loads(schema_text)
        jsonschema.Draft202012Validator.check_schema(schema)
    except (json.JSONDecodeError, jsonschema.SchemaError) as err:
        raise UserError(f"schema= is not a valid JSON schema: {str(err).splitlines()[0]}") from None
    return schema


async def _json_answer(model: ChatModel, messages: list[ChatMessage], schema: dict[str, Any]) -> ChatResult:
    """Ask for JSON; if invalid, tell the model what was wrong once; then give up clearly."""
    usage = Usage()
    for attempt in range(2):
        result = await model.chat(messages, json_schema=schema)
        usage = Usage(usage.prompt_tokens + result.usage.prompt_tokens,
                      usage.completion_tokens + result.usage.completion_tokens)
        try:
            jsonschema.validate(parse_json_reply(result.text), schema)
            return ChatResult(result.text, result.model, result.backend, usage, latency_ms=result.latency_ms)
        except json.JSONDecodeError as err:
            error = f"not JSON ({err.msg} at position {err.pos})"
        except jsonschema.ValidationError as err:
            error = f"JSON does not match the schema: {err.message}"
        if attempt == 0:
            messages = [*messages, ChatMessage("assistant", result.text), json_retry_message(error)]
    raise UserError(f"The model did not produce valid JSON after 2 attempts: {error}. "
                    "Try a larger model or a simpler schema.")
