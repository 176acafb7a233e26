"""One parser for command text, used by every adapter.

    >>> specs = {"models": CommandSpec("models", subcommands={"use": "pick a model", "list": ""})}
    >>> cmd = parse('/models use llama3.1:8b', specs)
    >>> cmd.name, cmd.args
    ('models', ('use', 'llama3.1:8b'))
    >>> parse('/modles list', specs)
    Traceback (most recent call last):
    ...
    bot.errors.CommandError: Unknown command /modles. Did you mean /models? Type /help for the list.

Options are `key=value` (or `--key=value`, `--flag`); values may be quoted. An option the command
does not declare is an error, unless the command takes free text, in which case it stays text.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import CommandError
from bot.messages import Command

_OPTION = re.compile(r"^(?:--)?([A-Za-z_][\w-]*)=(.*)$", re.S)
_FLAG = re.compile(r"^--([A-Za-z_][\w-]*)$")
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


@dataclass(frozen=True)
class Opt:
    """A declared option: its type, allowed values or range, and a word of help."""

    type: Callable[[str], Any] = str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    help: str = ""

    def convert(self, key: str, raw: str) -> Any:
        if self.choices and raw not in self.choices:
            raise CommandError(f"Bad value for {key}: '{raw}'. Allowed: {', '.join(self.choices)}.")
        if self.type is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise CommandError(f"Bad value for {key}: '{raw}'. Use true or false.")
        try:
            value = self.type(raw)
        except (TypeError, ValueError):
            kind = getattr(self.type, "__name__", "value")
            raise CommandError(f"Bad value for {key}: '{raw}' is not a valid {kind}.") from None
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise CommandError(f"Bad value for {key}: {raw} is outside {self.min}..{self.max}.")
        return value


@dataclass(frozen=True)
class CommandSpec:
    """What a command accepts. `subcommands` maps name -> help; `free_text` keeps unknown k=v as text."""

    name: str
    help: str = ""
    usage: str = ""
    options: Mapping[str, Opt] = field(default_factory=dict)
    subcommands: Mapping[str, str] = field(default_factory=dict)
    free_text: bool = False
    admin: bool = False


def _split(body: str, free_text: bool) -> list[str]:
    try:
        return shlex.split(body)
    except ValueError as err:  # unbalanced quote
        if free_text:
            return body.split()
        raise CommandError(f"Could not read the command: {err}. Close the quote or remove it.") from None


def nearest(word: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return match[0] if match else None


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


def parse(text: str, specs: Mapping[str, CommandSpec]) -> Command:
    """Parse `/name [sub] args key=value ...` against the registered command specs."""
    text = text.strip().translate(_SMART_QUOTES)
    if not text.startswith("/") or len(text) == 1:
        raise CommandError("Empty command. Type /help for the list of commands.")
    name, _, body = text[1:].partition(" ")
    name = name.lower()
    spec = specs.get(name)
    if spec is None:
        hint = nearest(name, sorted(specs))
        did_you_mean = f" Did you mean /{hint}?" if hint else ""
        raise CommandError(f"Unknown command /{name}.{did_you_mean} Type /help for the list.")

    args: list[str] = []
    options: dict[str, Any] = {}
    for token in _split(body, spec.free_text):
        flag, opt = _FLAG.match(token), _OPTION.match(token)
        key, raw = (flag.group(1), "true") if flag else (opt.groups() if opt else (None, None))
        if key is not None and key in spec.options:
            options[key] = spec.options[key].convert(key, raw)
        elif key is not None and not spec.free_text:
            allowed = ", ".join(sorted(spec.options)) or "none"
            raise CommandError(f"Unknown option '{key}' for /{name}. Allowed options: {allowed}.")
        else:
            args.append(token)

    if spec.subcommands:
        if not args:
            raise CommandError(f"/{name} needs a subcommand: {', '.join(spec.subcommands)}.")
        if args[0] not in spec.subcommands:
            hint = nearest(args[0], list(spec.subcommands))
            did_you_mean = f" Did you mean '{hint}'?" if hint else ""
            raise CommandError(
                f"Unknown subcommand '{args[0]}' for /{name}.{did_you_mean} "
                f"Use one of: {', '.join(spec.subcommands)}."
            )
    return Command(name=name, args=tuple(args), options=options, raw=text)
