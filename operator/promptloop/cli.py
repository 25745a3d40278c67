"""The ``promptloop`` command (also installed as the kubectl plugin ``kubectl-promptloop``).

Each subcommand lives beside the code it drives and registers itself here through a
``register(subparsers)`` function; this module only assembles them. A subcommand's handler takes
the parsed arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

__all__ = ["SUBCOMMAND_MODULES", "build_parser", "main", "version"]

# Modules that contribute subcommands, in the order `promptloop --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "promptloop.runner",  # operator
    "promptloop.improver.command",  # improve
    "promptloop.userops",  # approve, reject, status, diff
    "promptloop.listing",  # list
    # `dev` comes from the separate promptloop-devenv distribution (`make install`); the image
    # does not carry it, so there the subcommand is simply absent.
    "devenv.command",  # dev cluster|agentfield|llm|demo
)

# Which module serves which subcommand: a command imports only its own module (the improver's
# pulls in the openai SDK, seconds of start-up that `promptloop status` should not pay).
MODULE_OF: dict[str, str] = {
    "operator": "promptloop.runner",
    "improve": "promptloop.improver.command",
    "approve": "promptloop.userops",
    "reject": "promptloop.userops",
    "status": "promptloop.userops",
    "diff": "promptloop.userops",
    "list": "promptloop.listing",
    "dev": "devenv.command",
}


def version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    try:
        return importlib.metadata.version("promptloop")
    except importlib.metadata.PackageNotFoundError:
        from promptloop import __version__

        return __version__


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Assemble the parser: every subcommand, or only the module that serves ``command``."""
    parser = argparse.ArgumentParser(
        prog="promptloop",
        description="Canary LLM agent prompt revisions behind evidence and a human gate.",
    )
    parser.add_argument(
        "--version", action="version", version=f"promptloop {version()}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [MODULE_OF[command]] if command in MODULE_OF else list(SUBCOMMAND_MODULES)
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # A subcommand whose module is not written yet is simply absent; any other missing
            # module is a real error and must surface.
            if error.name is None or not (module_name + ".").startswith(error.name + "."):
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--version"]:
        # Without importing every subcommand's module (the improver's pulls in the openai SDK).
        print(f"promptloop {version()}")
        return 0
    command = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(arguments)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
