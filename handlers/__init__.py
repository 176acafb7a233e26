"""What the bot does with a message. Each module registers its commands with `@command`;
`load_all()` imports every module here once so the router sees them."""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
