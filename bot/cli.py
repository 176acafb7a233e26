"""`ladder` command line: chat | ask | run | models | db (other families add their own sub-apps)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from packages or the data dir, never the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from bot.config import Settings, get_settings  # noqa: E402
from bot.errors import DatabaseUnavailable  # noqa: E402
from bot.messages import Command, Reply  # noqa: E402

app = typer.Typer(help="Ladder: every level of generative AI from your team chat.", no_args_is_help=True)
models_app = typer.Typer(help="List, pull, inspect and pick models.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
T = TypeVar("T")
EXIT_DB = 3


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_async(fn: Callable[[Settings], Awaitable[T]]) -> T:
    """Run a coroutine with settings; database trouble is one clear line and exit code 3."""
    try:
        return asyncio.run(fn(get_settings()))
    except DatabaseUnavailable as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_DB) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _with_router(settings: Settings, body: Callable[[Any, Any], Awaitable[T]]) -> T:
    from bot.app import build_context, build_router, close

    ctx = await build_context(settings)
    try:
        return await body(build_router(ctx), ctx)
    finally:
        await close(ctx)


def dispatch_once(text: str, command: Command | None = None) -> Reply | None:
    """Run one message through the router as the console user and return the final reply."""

    async def body(router: Any, ctx: Any) -> Reply | None:
        from bot.adapters.console import ConsoleAdapter

        console = ConsoleAdapter(router, ctx)
        return await router.answer(console.incoming(text).evolve(command=command))

    return run_async(lambda s: _with_router(s, body))


def print_reply(reply: Reply | None, as_json: bool = False) -> None:
    from bot.adapters.console import render

    if reply is None:
        raise typer.Exit(1)
    if as_json:
        usage = reply.usage
        typer.echo(json.dumps({"text": reply.text, "model": reply.model, "backend": reply.backend,
                               "prompt_tokens": usage.prompt_tokens if usage else None,
                               "completion_tokens": usage.completion_tokens if usage else None,
                               "latency_ms": reply.latency_ms, "error": reply.error}))
    else:
        typer.echo(render(reply, get_settings().data_dir / "files"), err=reply.error)
    if reply.error:
        raise typer.Exit(1)


@app.command()
def chat() -> None:
    """Chat in the terminal (the embedded default: no platform tokens needed)."""

    async def body(router: Any, ctx: Any) -> None:
        from bot.adapters.console import ConsoleAdapter

        console = ConsoleAdapter(router, ctx)
        ctx.platforms[console.name] = console  # training reports and reminders post here
        import training

        await training.attach(ctx)
        await console.run()

    run_async(lambda s: _with_router(s, body))


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question, in quotes."),
    template: str | None = typer.Option(None, help="cot | json | few-shot"),
    schema: str | None = typer.Option(None, help="JSON schema for --template json"),
    model: str | None = typer.Option(None, help="Answer with this model."),
    as_json: bool = typer.Option(False, "--json", help="Print the reply as one JSON object."),
) -> None:
    """Answer one question and exit (scriptable)."""
    options = {k: v for k, v in {"template": template, "schema": schema, "model": model}.items() if v}
    is_slash = question.lstrip().startswith("/")  # `ladder ask "/confirm p1a2b3"` runs that command
    reply = dispatch_once(question, None if is_slash else Command("ask", args=(question,), options=options,
                                                                   raw=question))
    print_reply(reply, as_json)


@app.command("run")
def run_bot(http_port: int | None = typer.Option(None, help="Serve Slack over HTTP on this port "
                                                "(Events API) instead of Socket Mode.")) -> None:
    """Run every configured platform adapter (Slack, Discord) in one process."""
    from bot.app import configured_adapters, run_platforms

    if configured_adapters(get_settings()):
        if not run_async(lambda s: run_platforms(s, http_port=http_port)):
            raise typer.Exit(1)  # every adapter failed; each said why in the log
        return
    typer.echo("No chat platform is configured. Set SLACK_BOT_TOKEN + SLACK_APP_TOKEN (or "
               "SLACK_SIGNING_SECRET) or DISCORD_TOKEN, or use `ladder chat` for the terminal.")
    raise typer.Exit(2)


def _slash(text: str) -> None:
    print_reply(dispatch_once(text))


@models_app.command("list")
def models_list() -> None:
    """Models the backends can serve."""
    _slash("/models list")


@models_app.command("info")
def models_info(name: str) -> None:
    """Decode a model name and estimate the memory it needs."""
    _slash(f"/models info {name}")


@models_app.command("pull")
def models_pull(name: str) -> None:
    """Download a model to the Ollama server."""
    _slash(f"/models pull {name}")


@models_app.command("use")
def models_use(name: str) -> None:
    """Answer with this model in the console channel."""
    _slash(f"/models use {name}")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    from bot import db

    async def body(settings: Settings) -> None:
        url = await asyncio.to_thread(db.resolve_url, settings)
        engine = db.make_engine(url)
        await db.check(engine)
        await engine.dispose()
        await asyncio.to_thread(db.upgrade, url, revision)
        typer.echo(f"database at {await asyncio.to_thread(db.current, url)}")

    run_async(body)


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` drops everything)."""
    from bot import db

    async def body(settings: Settings) -> None:
        url = await asyncio.to_thread(db.resolve_url, settings)
        await asyncio.to_thread(db.downgrade, url, revision)
        typer.echo(f"database at {await asyncio.to_thread(db.current, url)}")

    run_async(body)


from knowledge.cli import register as _register_knowledge  # noqa: E402  (sync, reindex, sources)

_register_knowledge(app)

from handlers.mcp_server import mcp_command  # noqa: E402  (`ladder mcp`: Ladder as an MCP server)

app.command("mcp")(mcp_command)

from training.cli import register as _register_training  # noqa: E402  (worker, jobs)

_register_training(app)

from knowledge.eval_cli import register as _register_eval  # noqa: E402  (eval retrieval)

_register_eval(app)


if __name__ == "__main__":
    app()
