"""`/help`: every command with one line of help; `/help NAME` for its usage."""

from __future__ import annotations

from bot.context import Context
from bot.errors import UserError
from bot.messages import Incoming, Reply
from bot.router import command, registered


@command("help", help="List commands, or show how to use one", usage="/help [COMMAND]")
async def help_(msg: Incoming, ctx: Context) -> Reply:
    table = registered()
    if msg.command and msg.command.args:
        name = msg.command.args[0].lstrip("/")
        if name not in table:
            raise UserError(f"No command /{name}. Type /help for the list.")
        spec = table[name].spec
        lines = [f"{spec.usage} — {spec.help}" + (" (admin)" if spec.admin else "")]
        lines += [f"  {sub}: {text}" for sub, text in spec.subcommands.items()]
        lines += [f"  {key}=" + ("|".join(opt.choices) if opt.choices else opt.help or "VALUE")
                  for key, opt in spec.options.items()]
        return Reply(text="\n".join(lines), ephemeral=True)
    lines = ["Ask anything in plain words, or use a command:"]
    for name in sorted(table):
        spec = table[name].spec
        if spec.admin and not msg.is_admin:
            continue
        lines.append(f"  /{name} — {spec.help}" + (" (admin)" if spec.admin else ""))
    return Reply(text="\n".join(lines), ephemeral=True)
