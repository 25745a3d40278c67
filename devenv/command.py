"""``promptloop dev``: the local environment (control plane, AgentField stand-in, model simulator,
demo). Each part registers its own sub-subcommands; this module only gathers them."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DEV_MODULES", "register"]

DEV_MODULES: tuple[str, ...] = (
    "devenv.cluster",  # dev cluster build|up|down|status
    "devenv.agentfield",  # dev agentfield up|down|serve
    "devenv.llm",  # dev llm up|down|serve
    "devenv.demo",  # dev demo, dev demo-down
)


def register(subparsers: Any) -> None:
    """Add ``dev`` and every part's subcommands that exists."""
    dev = subparsers.add_parser("dev", help="the local development and test environment")
    dev_subparsers = dev.add_subparsers(dest="dev_command", metavar="PART")
    dev.set_defaults(func=lambda _args: (dev.print_help(), 2)[1])
    for module_name in DEV_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.register(dev_subparsers)
