"""`/rag on|off`: whether questions in this channel are answered from the knowledge base.

    /rag off      # plain model answers here
    /rag status   # show the current setting
"""

from __future__ import annotations

from bot import channels
from bot.context import Context
from bot.messages import Incoming, Reply
from bot.router import command


@command("rag", help="Answer from the knowledge base in this channel, or not", usage="/rag [on|off]",
         subcommands={"on": "answer from the knowledge base (default)", "off": "plain model answers",
                      "status": "show the setting"})
async def rag(msg: Incoming, ctx: Context) -> Reply:
    assert msg.command is not None
    sub = msg.command.args[0]
    if sub == "status":
        on = (await channels.load(ctx.db, msg)).rag_enabled
        return Reply(text=f"Knowledge-base answers are {'on' if on else 'off'} in this channel.")
    await channels.update(ctx.db, msg, rag_enabled=sub == "on")
    return Reply(text=f"Knowledge-base answers are now {sub} in this channel.")
