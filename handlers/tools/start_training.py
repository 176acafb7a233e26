"""`start_training` (admin, side effect): queue a training job through exactly the same path as `/train`.

The call becomes the command `/train RECIPE key=value ...`, checked by the command parser before the
user is asked to confirm, and run on confirmation by the router as the human who asked (admin gate,
audit and the recipe's own validation included), so the model can do nothing `/train` would refuse.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from pydantic import Field

from handlers.tools import ToolContext, check_command, run_command, tool


def command_text(recipe: str, params: dict[str, Any]) -> str:
    """The `/train` command the call stands for.

    >>> command_text("lora", {"base": "smollm2", "epochs": 2})
    '/train lora base=smollm2 epochs=2'
    """
    opts = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in params.items())
    return f"/train {shlex.quote(recipe)} {opts}".strip()


async def _prepare(tc: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    check_command(command_text(args["recipe"], args["params"]))
    return args


@tool("start_training", admin=True, side_effect=True, prepare=_prepare, summary="Queue a training job: {recipe}",
      description="Queue a training job (same as /train RECIPE key=value...). Needs the user's confirmation.")
async def start_training(tc: ToolContext,
                         recipe: Annotated[str, Field(description="lora, qlora, sft, dpo or pretrain",
                                                      pattern=r"^[\w-]{1,64}$")],
                         params: Annotated[dict[str, str | int | float | bool],
                                           Field(description="recipe options, e.g. {\"base\": \"smollm2\"}")]
                         = {}) -> str:  # noqa: B006 - pydantic copies defaults
    return await run_command(tc, command_text(recipe, params))
