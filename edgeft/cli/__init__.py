"""Command line: a thin layer over RunConfig and the pipeline. The only place errors become exit codes.

Nothing heavy is imported here: stages import torch/transformers inside their ``run``, so
``edgeft --help`` and ``edgeft targets ls`` stay fast and torch-free.
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    from edgeft.cli.commands import cli

    cli.main(args=argv, prog_name="edgeft")
