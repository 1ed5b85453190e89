"""Command line: a thin layer over RunConfig and the pipeline. The only place errors become exit codes.

Nothing heavy is imported here: stages import torch/transformers inside their ``run``, so
``edgeft --help`` and ``edgeft targets ls`` stay fast and torch-free.
"""
from __future__ import annotations

import sys

import click

from edgeft.errors import EdgeftError


def main(argv: list[str] | None = None) -> None:
    from edgeft.cli.commands import cli

    try:
        cli.main(args=argv, prog_name="edgeft", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except EdgeftError as e:
        click.echo(f"error: {e.message}", err=True)
        if e.fix:
            click.echo(f"  fix: {e.fix}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: finished stages are kept; re-run the same command to resume", err=True)
        sys.exit(130)
