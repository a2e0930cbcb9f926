"""The ``editscope`` command line. Each area of the package registers its own commands."""

from __future__ import annotations

import logging

import typer

from editscope.cli import bench_commands, core_commands, serve_commands, store_commands, world_commands

app = typer.Typer(
    help="editscope: online, scope-aware knowledge editing of vision-language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (core_commands, world_commands, bench_commands, store_commands, serve_commands):
    module.register(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
