"""The Discord adapter: a thin discord.py shell around the translators in `discord_render`.

Answers mentions and DMs as replies (long answers in a thread when allowed), `/ladder` application
commands (deferred at once, answered by editing the original response), and persistent buttons.
`DISCORD_API_URL` points discord.py's REST at a proxy or test double; the gateway URL then comes from
that server's `GET /gateway/bot`. Also the `Platform` that sync and notifications use: post, update,
upload, history, members, readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import discord
import yarl
from discord.gateway import DiscordWebSocket

from bot import actions
from bot.adapters import discord_render as render
from bot.adapters.discord_ui import LadderButton, files_for, ladder_group, view_for
from bot.audit import audit
from bot.context import Context
from bot.errors import UserError
from bot.messages import Action, FileOut, HistoryMessage, Incoming, Reply
from bot.middleware import claim_delivery
from bot.router import Router
from bot.safety import neutralise_mentions, parse_allowlist

log = logging.getLogger(__name__)

INTENT_HELP = ("Discord closed the connection (4014): the bot lacks the privileged Message Content Intent. "
               "Enable it in the Discord Developer Portal -> your application -> Bot -> Privileged Gateway "
               "Intents -> MESSAGE CONTENT INTENT{members}, then restart. Other adapters keep running.")
MEMBERS_HELP = " (and SERVER MEMBERS INTENT, since DISCORD_MEMBERS_INTENT is on)"
LOGIN_HELP = "Discord rejected DISCORD_TOKEN (401). Copy the bot token again from the Developer Portal -> Bot."


class DiscordSetupError(RuntimeError):
    """The Discord adapter cannot run as configured; the message says what to change."""


class _Client(discord.Client):
    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self.adapter = adapter
        self.tree = discord.app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        await self.adapter.setup()

    async def on_ready(self) -> None:
        log.info("discord: connected as %s to %d guild(s)", self.user, len(self.guilds))
        self.adapter.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)

    async def on_ladder_button(self, interaction: discord.Interaction, action: Action) -> None:
        await self.adapter.on_button(interaction, action)


class DiscordAdapter:
    name = "discord"

    def __init__(self, router: Router, ctx: Context, *, guild_ready_timeout: float = 2.0) -> None:
        self.router, self.ctx, self.settings = router, ctx, ctx.settings
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = self.settings.discord_members_intent
        self.client = _Client(self, intents=intents, allowed_mentions=discord.AllowedMentions.none(),
                              chunk_guilds_at_startup=False, guild_ready_timeout=guild_ready_timeout)
        self.ready = asyncio.Event()
        self.allowlist = parse_allowlist(getattr(self.settings, "agent_http_allowlist", ""))
        self.admin_roles = {r.strip() for r in self.settings.discord_admin_role_ids.split(",") if r.strip()}
        self.guild_ids = [int(g) for g in self.settings.discord_guild_ids.split(",") if g.strip()]
        self.interval = max(self.settings.stream_edit_interval_s, 0.0)

    # -- life cycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and serve until closed; a setup problem raises one `DiscordSetupError` saying what to do."""
        if self.settings.discord_token is None:
            raise DiscordSetupError("DISCORD_TOKEN is not set.")
        discord.http.Route.BASE = self.settings.discord_api_url.rstrip("/")
        try:
            await self.client.start(self.settings.discord_token.get_secret_value())
        except discord.PrivilegedIntentsRequired:
            members = MEMBERS_HELP if self.settings.discord_members_intent else ""
            raise DiscordSetupError(INTENT_HELP.format(members=members)) from None
        except discord.LoginFailure:
            raise DiscordSetupError(LOGIN_HELP) from None
        finally:
            if not self.client.is_closed():
                await self.client.close()

    async def close(self) -> None:
        await self.client.close()

    async def setup(self) -> None:
        """After login, before the gateway: gateway URL, persistent buttons, `/ladder` synced."""
        _, url, _ = await self.client.http.get_bot_gateway()
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.client.add_dynamic_items(LadderButton)
        group = ladder_group(self.router.specs, self.on_slash)
        guilds = [discord.Object(g) for g in self.guild_ids] or [None]
        for guild in guilds:
            self.client.tree.add_command(group, guild=guild)
            try:
                await self.client.tree.sync(guild=guild)
            except discord.HTTPException as err:
                log.error("discord: could not sync /ladder to %s: %s (is the applications.commands scope granted?)",
                          guild.id if guild else "all guilds", err.text or err.status)

    # -- who is asking ----------------------------------------------------------------------------
    def is_admin(self, user: discord.abc.User, permissions: discord.Permissions | None = None) -> bool:
        roles = [str(r.id) for r in getattr(user, "roles", [])]
        if permissions is None and isinstance(user, discord.Member):
            permissions = user.guild_permissions
        return render.is_admin(str(user.id), roles, administrator=bool(permissions and permissions.administrator),
                               admin_users=self.settings.admins, admin_roles=self.admin_roles)

    def _where(self, channel: Any) -> tuple[str, str | None, bool]:
        """(channel, thread, private) of a channel: a thread maps to its parent channel + thread id."""
        if isinstance(channel, discord.Thread):
            return str(channel.parent_id), str(channel.id), channel.is_private()
        private = False
        if isinstance(channel, discord.abc.GuildChannel):
            private = not channel.permissions_for(channel.guild.default_role).view_channel
        return str(getattr(channel, "id", "")), None, private

    async def _first(self, key: str) -> bool:
        """Claim a delivery id; True only for the first delivery (concurrent duplicates included)."""
        return await claim_delivery(self.ctx.db, self.name, key)

    # -- mentions and DMs -------------------------------------------------------------------------
    def incoming_message(self, message: discord.Message) -> Incoming | None:
        """The message as an `Incoming`, or None when it is not for the bot."""
        me = self.client.user
        if me is None or message.author.bot or message.author.id == me.id:
            return None
        is_dm = message.guild is None
        in_own_thread = isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id
        if not (is_dm or me in message.mentions or in_own_thread):
            return None
        root = None
        ref = message.reference.resolved if message.reference else None
        if isinstance(ref, discord.Message) and ref.author.id == me.id:
            root = str(ref.reference.message_id) if ref.reference and ref.reference.message_id else str(ref.id)
        channel, _, private = self._where(message.channel)
        thread = render.conversation_root(in_thread=isinstance(message.channel, discord.Thread),
                                          channel_id=str(message.channel.id), message_id=str(message.id),
                                          replied_to_bot_root=root, is_dm=is_dm)
        return Incoming(platform=self.name, workspace=str(message.guild.id) if message.guild else "dm",
                        channel=channel if not is_dm else str(message.channel.id), thread=thread,
                        user=str(message.author.id), text=render.strip_mention(message.content, me.id),
                        is_admin=self.is_admin(message.author), is_dm=is_dm, is_private_channel=private,
                        event_id=f"message:{message.id}", user_name=message.author.display_name)

    async def on_message(self, message: discord.Message) -> None:
        msg = self.incoming_message(message)
        if msg is None:
            return
        posted: discord.Message | None = None
        last = 0.0
        async for reply in self.router.dispatch(msg):
            if reply.partial:
                if time.monotonic() - last >= self.interval:
                    text = self._partial_text(reply)
                    if posted is None:
                        posted = await message.reply(text, mention_author=False)
                    else:
                        await posted.edit(content=text)
                    last = time.monotonic()
                continue
            posted = await self._deliver(message, msg, reply, posted)

    def _partial_text(self, reply: Reply) -> str:
        text = render.reply_text(reply, self.allowlist)
        return text if len(text) <= render.LIMIT else text[: render.LIMIT - 2] + " …"

    def _can_thread(self, message: discord.Message) -> bool:
        channel = message.channel
        return (isinstance(channel, discord.TextChannel) and message.guild is not None
                and channel.permissions_for(message.guild.me).create_public_threads)

    async def _deliver(self, message: discord.Message, msg: Incoming, reply: Reply,
                       posted: discord.Message | None) -> discord.Message:
        """The final reply: edits the streamed message, splits long text, threads long answers if allowed."""
        chunks = render.render_chunks(reply, self.allowlist)
        view = view_for(self._actions(reply))
        if len(chunks) > 1 and self._can_thread(message):
            if posted is not None:
                await posted.delete()
            thread = await message.create_thread(name=render.thread_name(msg.text))
            return await self._send_chunks(thread, chunks, reply.files, view)
        if posted is not None:
            last = len(chunks) == 1
            await posted.edit(content=chunks[0], attachments=files_for(reply.files) if last else [],
                              **({"view": view} if last and view else {}))
            return await self._send_chunks(message.channel, chunks[1:], reply.files, view) if not last else posted
        first = await message.reply(chunks[0], mention_author=False, **self._extras(reply.files, view, chunks[1:]))
        return await self._send_chunks(message.channel, chunks[1:], reply.files, view) if chunks[1:] else first

    @staticmethod
    def _extras(files: tuple[FileOut, ...], view: discord.ui.View | None, rest: list[str]) -> dict[str, Any]:
        """Files and buttons go on the last message of a split reply."""
        if rest:
            return {}
        out: dict[str, Any] = {}
        if files:
            out["files"] = files_for(files)
        if view is not None:
            out["view"] = view
        return out

    async def _send_chunks(self, target: discord.abc.Messageable, chunks: list[str], files: tuple[FileOut, ...],
                           view: discord.ui.View | None) -> discord.Message:
        sent = None
        for i, chunk in enumerate(chunks):
            sent = await target.send(chunk, **self._extras(files, view, chunks[i + 1:]))
        assert sent is not None
        return sent

    def _actions(self, reply: Reply) -> list[Action]:
        feedback = reply.model is not None and not reply.error and not reply.ephemeral
        return list(reply.actions) + (list(render.feedback_actions()) if feedback else [])

    # -- application commands ---------------------------------------------------------------------
    def incoming_interaction(self, interaction: discord.Interaction, text: str) -> Incoming:
        channel, thread, private = self._where(interaction.channel)
        guild = interaction.guild_id
        return Incoming(platform=self.name, workspace=str(guild) if guild else "dm",
                        channel=channel or str(interaction.channel_id), thread=thread, user=str(interaction.user.id),
                        text=text, is_admin=self.is_admin(interaction.user, interaction.permissions if guild else None),
                        is_dm=guild is None, is_private_channel=private, user_name=interaction.user.display_name)

    async def on_slash(self, interaction: discord.Interaction, name: str, args: str) -> None:
        """`/ladder NAME args`: parse (bad input: ephemeral at once), defer, then answer by editing."""
        if not await self._first(f"interaction:{interaction.id}"):
            log.info("duplicate interaction %s ignored", interaction.id)
            return
        msg = self.incoming_interaction(interaction, f"/{name} {args}".strip())
        try:
            msg = self.router.resolve(msg)
        except UserError as err:
            await interaction.response.send_message(neutralise_mentions(str(err)), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        await self._answer_interaction(interaction, msg)

    async def _answer_interaction(self, interaction: discord.Interaction, msg: Incoming) -> None:
        last, edited = 0.0, False
        async for reply in self.router.dispatch(msg):
            if reply.partial:
                if time.monotonic() - last >= self.interval:
                    await interaction.edit_original_response(content=self._partial_text(reply))
                    last, edited = time.monotonic(), True
                continue
            await self._finish_interaction(interaction, reply, edited)
            edited = True

    async def _finish_interaction(self, interaction: discord.Interaction, reply: Reply, edited: bool) -> None:
        chunks = render.render_chunks(reply, self.allowlist)
        if reply.ephemeral or reply.error:
            if not edited:  # drop the public "thinking..." so the error shows only to the user
                await interaction.delete_original_response()
            for i, chunk in enumerate(chunks):
                await interaction.followup.send(chunk, ephemeral=True,
                                                **self._extras(reply.files, None, chunks[i + 1:]))
            return
        view = view_for(self._actions(reply))
        single = len(chunks) == 1
        await interaction.edit_original_response(content=chunks[0],
                                                 attachments=files_for(reply.files) if single else [],
                                                 **({"view": view} if single and view else {}))
        for i, chunk in enumerate(chunks[1:], start=1):
            await interaction.followup.send(chunk, **self._extras(reply.files, view, chunks[i + 1:]))

    # -- buttons ----------------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: Action) -> None:
        """Feedback is stored; Confirm/Cancel resolve a pending action; other buttons run `/ACTION VALUE`."""
        if not await self._first(f"interaction:{interaction.id}"):
            return
        msg = self.incoming_interaction(interaction, f"/{action.action_id} {action.value}".strip())
        if interaction.message is not None:
            msg = msg.evolve(thread=msg.thread or self._message_root(interaction.message))
        try:
            if action.action_id in (actions.FEEDBACK_UP, actions.FEEDBACK_DOWN):
                await self._feedback(interaction, msg, action)
            elif action.action_id in (actions.CONFIRM, actions.CANCEL):
                await interaction.response.defer(thinking=True)
                reply = await actions.resolve(self.ctx, msg, action.value, confirm=action.action_id == actions.CONFIRM)
                await self._finish_interaction(interaction, reply, False)
            elif action.action_id in actions.ADMIN_ACTIONS and not msg.is_admin:
                await audit(self.ctx.db, msg, f"button:{action.action_id}", allowed=False, value=action.value)
                raise UserError(f"Only admins can press {action.label}.")
            else:
                await interaction.response.defer(thinking=True)
                await self._answer_interaction(interaction, msg)
        except UserError as err:
            await self._ephemeral(interaction, str(err))

    @staticmethod
    def _message_root(message: discord.Message) -> str | None:
        ref = message.reference
        return str(ref.message_id) if ref and ref.message_id else None

    async def _ephemeral(self, interaction: discord.Interaction, text: str) -> None:
        text = neutralise_mentions(text)
        if interaction.response.is_done():
            await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    async def _feedback(self, interaction: discord.Interaction, msg: Incoming, action: Action) -> None:
        message = interaction.message
        answer = message.content if message else ""
        question = ""
        ref = message.reference.resolved if message and message.reference else None
        if isinstance(ref, discord.Message):
            question = ref.content
        value = actions.feedback_value(question, render.citations_from_text(answer))
        score = 1 if action.action_id == actions.FEEDBACK_UP else -1
        await actions.record_feedback(self.ctx, msg, score=score, message_id=str(message.id) if message else None,
                                      answer=answer, value=value)
        await interaction.response.send_message("Thanks for the feedback.", ephemeral=True)

    # -- Platform: what sync and notifications use ------------------------------------------------
    def _target(self, channel: str, thread: str | None = None) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(thread or channel))

    async def post(self, channel: str, reply: Reply, thread: str | None = None) -> str:
        """Post a reply (split if long, files and buttons on the last part); returns the first message id."""
        chunks = render.render_chunks(reply, self.allowlist)
        target = self._target(channel, thread)
        view = view_for(reply.actions)
        first = await target.send(chunks[0], **self._extras(reply.files, view, chunks[1:]))
        if chunks[1:]:
            await self._send_chunks(target, chunks[1:], reply.files, view)
        return str(first.id)

    async def update(self, channel: str, message_id: str, reply: Reply) -> None:
        chunks = render.render_chunks(reply, self.allowlist)
        view = view_for(reply.actions)
        await self._target(channel).get_partial_message(int(message_id)).edit(
            content=chunks[0], **({"view": view} if view else {}))

    async def upload(self, channel: str, file: FileOut, thread: str | None = None, text: str = "") -> str:
        sent = await self._target(channel, thread).send(neutralise_mentions(text) or None, files=files_for([file]))
        return str(sent.id)

    async def history(self, channel: str, *, after: str | datetime | None = None, thread: str | None = None,
                      limit: int | None = None) -> AsyncIterator[HistoryMessage]:
        """Messages after a message-id cursor, oldest first (discord.py pages 100 at a time); with `thread`,
        that thread's messages (a Discord thread is a channel of its own)."""
        source = thread or channel
        target = self.client.get_channel(int(source)) or self._target(source)
        after_obj = discord.Object(int(after)) if isinstance(after, str) else after  # discord.py takes a datetime
        async for m in target.history(limit=limit, after=after_obj, oldest_first=True):
            in_thread = thread or (str(m.channel.id) if isinstance(m.channel, discord.Thread) else None)
            yield HistoryMessage(id=str(m.id), channel=channel, thread=in_thread, user=str(m.author.id),
                                 user_name=m.author.display_name, text=m.content, created_at=m.created_at,
                                 is_bot=m.author.bot, url=m.jump_url,
                                 reply_to=str(m.reference.message_id) if m.reference else None)

    async def threads(self, channel: str) -> list[str]:
        """Ids of a channel's threads, active and archived."""
        chan = self.client.get_channel(int(channel)) or await self.client.fetch_channel(int(channel))
        if not isinstance(chan, discord.TextChannel | discord.ForumChannel):
            return []
        ids = [str(t.id) for t in chan.threads]
        async for t in chan.archived_threads(limit=None):
            ids.append(str(t.id))
        return ids

    async def _guild_channel(self, channel: str) -> discord.abc.GuildChannel | None:
        chan = self.client.get_channel(int(channel)) or await self.client.fetch_channel(int(channel))
        if isinstance(chan, discord.Thread):
            chan = chan.parent
        return chan if isinstance(chan, discord.abc.GuildChannel) else None

    async def readers(self, channel: str) -> tuple[str, ...]:
        """ACL principals for a channel's content: `public` if everyone in the guild can view it."""
        chan = await self._guild_channel(channel)
        if chan is None:  # a DM: only its participants
            return (f"channel:{self.name}:{channel}",)
        everyone = chan.permissions_for(chan.guild.default_role).view_channel
        return render.channel_readers(self.name, str(chan.id), everyone_can_view=everyone)

    async def members(self, channel: str) -> list[str] | None:
        """User ids that can view the channel, from permission overwrites; None when unknown
        (listing guild members needs the Server Members Intent)."""
        chan = await self._guild_channel(channel)
        if chan is None or not self.settings.discord_members_intent:
            log.warning("discord: members of %s unknown (a DM, or DISCORD_MEMBERS_INTENT is off)", channel)
            return None
        try:
            members = [m async for m in chan.guild.fetch_members(limit=None)]
        except discord.HTTPException as err:
            log.warning("discord: cannot list members of guild %s: %s", chan.guild.id, err.text or err.status)
            return None
        return [str(m.id) for m in members if not m.bot and chan.permissions_for(m).view_channel]
