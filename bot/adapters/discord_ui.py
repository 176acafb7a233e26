"""discord.py UI pieces: persistent buttons and the `/ladder` application command group.

Buttons are `DynamicItem`s: the action and its value live in the custom id (`ladder:confirm:3f9a2c1b`),
so a button pressed after a restart still works. The `/ladder` group gets one subcommand per command
the router knows, each taking the command's text as `args`:

    /ladder ask args:What is RAG?        /ladder models args:list
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import discord
from discord import app_commands

from bot.adapters.discord_render import custom_id
from bot.commands import CommandSpec
from bot.messages import Action, FileOut

log = logging.getLogger(__name__)

MAX_SUBCOMMANDS = 25  # Discord's limit per command group
_NAME = re.compile(r"^[-_a-z0-9]{1,32}$")
_STYLES = {"primary": discord.ButtonStyle.primary, "danger": discord.ButtonStyle.danger,
           "success": discord.ButtonStyle.success}

ButtonHandler = Callable[[discord.Interaction, Action], Awaitable[None]]
SlashHandler = Callable[[discord.Interaction, str, str], Awaitable[None]]


class LadderButton(discord.ui.DynamicItem[discord.ui.Button], template=r"ladder:(?P<action>[\w-]+):(?P<value>.*)"):
    """A button whose custom id carries its action; pressing it calls the adapter's button handler."""

    def __init__(self, action: Action) -> None:
        self.action = action
        style = _STYLES.get(action.style, discord.ButtonStyle.secondary)
        super().__init__(discord.ui.Button(label=action.label[:80] or action.action_id, style=style,
                                           custom_id=custom_id(action)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> LadderButton:
        label = getattr(item, "label", None) or match["action"]
        return cls(Action(match["action"], label, match["value"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        handler: ButtonHandler = interaction.client.on_ladder_button  # type: ignore[attr-defined]
        await handler(interaction, self.action)


def view_for(actions: Iterable[Action]) -> discord.ui.View | None:
    """A persistent view (no timeout) with one button per action, or None when there are none."""
    items = list(actions)[:25]
    if not items:
        return None
    view = discord.ui.View(timeout=None)
    for action in items:
        view.add_item(LadderButton(action))
    return view


def files_for(files: Iterable[FileOut]) -> list[discord.File]:
    """Fresh `discord.File`s (each can be sent once)."""
    return [discord.File(io.BytesIO(f.data), filename=f.name, description=f.title or None) for f in files]


def _subcommand(name: str, spec: CommandSpec, handler: SlashHandler) -> app_commands.Command:
    async def callback(interaction: discord.Interaction, args: str | None = None) -> None:
        await handler(interaction, name, args or "")

    callback = app_commands.describe(args=(spec.usage or f"/{name}")[:100])(callback)
    return app_commands.Command(name=name, description=(spec.help or name)[:100], callback=callback)


def ladder_group(specs: Mapping[str, CommandSpec], handler: SlashHandler) -> app_commands.Group:
    """`/ladder <command> [args]`: the router's commands, `ask` and `help` first, at most 25."""
    group = app_commands.Group(name="ladder", description="Ladder: ask, models, knowledge, agents and training")
    names = [n for n in sorted(specs, key=lambda n: (n not in ("ask", "help"), n)) if _NAME.match(n)]
    if len(names) > MAX_SUBCOMMANDS:
        log.warning("Discord allows %d subcommands; /ladder leaves out: %s (mention the bot to use them)",
                    MAX_SUBCOMMANDS, ", ".join(names[MAX_SUBCOMMANDS:]))
    for name in names[:MAX_SUBCOMMANDS]:
        group.add_command(_subcommand(name, specs[name], handler))
    return group
