"""Prompt engineering per channel: a persona, few-shot examples, and saved named prompts.

    /persona set You are a senior SRE who answers in bullet points.
    /examples add Reset my password => Use the self-service page at id.example.com.
    /prompt save standup Turn these notes into a standup update: {input}
    /prompt run standup fixed the login bug, reviewing the cache PR
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bot import channels
from bot.context import Context
from bot.errors import UserError
from bot.messages import Incoming, Reply
from bot.models import SavedPrompt
from bot.prompts import fill
from bot.router import command
from handlers.ask import answer

MAX_EXAMPLES = 20


def _args(msg: Incoming) -> tuple[str, str]:
    assert msg.command is not None
    sub, *rest = msg.command.args
    return sub, " ".join(rest).strip()


@command("persona", help="Set the role the model plays in this channel", usage="/persona set TEXT | show | clear",
         subcommands={"set": "role prompt for this channel", "show": "current persona", "clear": "remove it"},
         free_text=True)
async def persona(msg: Incoming, ctx: Context) -> Reply:
    sub, text = _args(msg)
    if sub == "set":
        if not text:
            raise UserError("Give the persona text: /persona set You are a concise SRE.")
        await channels.update(ctx.db, msg, persona=text[:2000])
        return Reply(text=f"Persona for this channel set: {text[:2000]}")
    if sub == "clear":
        await channels.update(ctx.db, msg, persona=None)
        return Reply(text="Persona cleared; the default assistant answers here.")
    current = (await channels.load(ctx.db, msg)).persona
    return Reply(text=f"Persona: {current}" if current else "No persona set in this channel.")


@command("examples", help="Few-shot examples for template=few-shot",
         usage="/examples add INPUT => OUTPUT | list | clear",
         subcommands={"add": "INPUT => OUTPUT", "list": "show examples", "clear": "remove all"}, free_text=True)
async def examples(msg: Incoming, ctx: Context) -> Reply:
    sub, text = _args(msg)
    current = list((await channels.load(ctx.db, msg)).examples or [])
    if sub == "add":
        if "=>" not in text:
            raise UserError("Write the example as INPUT => OUTPUT, e.g. /examples add 2+2 => 4")
        given, _, expected = (part.strip() for part in text.partition("=>"))
        if not given or not expected:
            raise UserError("Both sides of => need text: /examples add INPUT => OUTPUT")
        if len(current) >= MAX_EXAMPLES:
            raise UserError(f"This channel already has {MAX_EXAMPLES} examples; /examples clear first.")
        current.append({"input": given, "output": expected})
        await channels.update(ctx.db, msg, examples=current)
        return Reply(text=f"Example {len(current)} saved. Use it with /ask ... template=few-shot")
    if sub == "clear":
        await channels.update(ctx.db, msg, examples=[])
        return Reply(text="Examples cleared.")
    if not current:
        return Reply(text="No examples yet. Add one with /examples add INPUT => OUTPUT")
    return Reply(text="\n".join(f"{i}. {e['input']} => {e['output']}" for i, e in enumerate(current, 1)))


@command("prompt", help="Saved named prompts", usage="/prompt save NAME TEXT | run NAME TEXT | list | delete NAME",
         subcommands={"save": "NAME TEXT (use {input} for the slot)", "run": "NAME TEXT", "list": "saved prompts",
                       "delete": "NAME"}, free_text=True)
async def prompt(msg: Incoming, ctx: Context) -> AsyncIterator[Reply]:
    sub, text = _args(msg)
    name, _, body = text.partition(" ")
    where = (SavedPrompt.platform == msg.platform, SavedPrompt.workspace == msg.workspace)
    if sub == "list":
        async with ctx.db() as session:
            rows = (await session.execute(select(SavedPrompt).where(*where).order_by(SavedPrompt.name))).scalars()
            listing = [f"{p.name}: {p.text[:80]}" for p in rows]
        yield Reply(text="\n".join(listing) if listing else "No saved prompts. Save one with /prompt save NAME TEXT")
        return
    if not name:
        raise UserError(f"Name the prompt: /prompt {sub} NAME ...")
    if sub == "save":
        if not body.strip():
            raise UserError("Give the prompt text: /prompt save NAME TEXT (use {input} where your text goes).")
        stmt = pg_insert(SavedPrompt).values(platform=msg.platform, workspace=msg.workspace, name=name,
                                             text=body.strip(), created_by=msg.user)
        stmt = stmt.on_conflict_do_update(constraint="uq_saved_prompts_platform",
                                          set_={"text": body.strip(), "created_by": msg.user})
        async with ctx.db() as session, session.begin():
            await session.execute(stmt)
        yield Reply(text=f"Saved prompt '{name}'. Run it with /prompt run {name} TEXT")
        return
    async with ctx.db() as session, session.begin():
        if sub == "delete":
            gone = (await session.execute(delete(SavedPrompt).where(*where, SavedPrompt.name == name))).rowcount
            yield Reply(text=f"Deleted prompt '{name}'." if gone else f"No saved prompt '{name}'.")
            return
        saved = (await session.execute(select(SavedPrompt).where(*where, SavedPrompt.name == name))).scalar()
    if saved is None:
        raise UserError(f"No saved prompt '{name}'. See /prompt list.")
    async for reply in answer(msg, ctx, fill(saved.text, body.strip())):
        yield reply
