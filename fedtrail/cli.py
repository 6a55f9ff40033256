"""The `fedtrail` console script: a group that only wires the role groups together.

Library code raises FedtrailError; this is the one place that turns errors into exit codes:
0 ok, 1 a check or operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import click

from aggregator.commands import aggregator
from fedtrail import __version__
from fedtrail.commands.audit import audit
from fedtrail.commands.chain import chain
from fedtrail.commands.demo import demo
from fedtrail.commands.explain import explain
from fedtrail.errors import ConfigError, FedtrailError
from node.commands import node

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Group(click.Group):
    """Maps our exceptions to exit codes for every subcommand (also under CliRunner)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_USAGE)
        except FedtrailError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_FAILED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fedtrail")
def cli() -> None:
    """Blockchain-audited federated learning for medical imaging."""


cli.add_command(chain)
cli.add_command(node)
cli.add_command(aggregator)
cli.add_command(audit)
cli.add_command(demo)
cli.add_command(explain)


def main() -> None:
    cli.main(prog_name="fedtrail")


if __name__ == "__main__":
    main()
