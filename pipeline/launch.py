"""The `biomint` script's entry: give the process its malloc environment, then run the CLI.

This module imports nothing heavy before `exec_with_malloc_env`: a re-exec after importing
Hydra and the configs would pay for those imports twice (0.2 s)."""
from __future__ import annotations


def console() -> None:
    from pipeline.malloc_tuning import exec_with_malloc_env

    exec_with_malloc_env()
    from pipeline.cli import console as cli_console

    cli_console()


if __name__ == "__main__":
    console()
