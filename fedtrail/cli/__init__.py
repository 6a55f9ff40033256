"""The `fedtrail` console script: a group that only wires the role groups together.

The group finds its subcommands through the ``fedtrail.commands`` entry points (declared in
pyproject.toml), so this bottom layer never imports a role: each role (node, aggregator,
auditor, simulation) registers its own group, and a command's module is imported only when that
command runs.

Library code raises FedtrailError; this is the one place that turns errors into exit codes:
0 ok, 1 a check or operation failed, 2 usage or configuration error. A file-system error that
names its path (an output folder under a file, say) is reported in one line too.
"""

from __future__ import annotations

import errno
from functools import cache
from importlib.metadata import EntryPoint, entry_points

import click

from fedtrail import __version__
from fedtrail.cli.output import printable
from fedtrail.errors import ConfigError, FedtrailError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# A file error with one of these is a path the user gave that cannot be used (usage, exit 2);
# any other (a full disk, an I/O error) is an operation that failed (exit 1).
_BAD_PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)
ENTRY_POINT_GROUP = "fedtrail.commands"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class _Group(click.Group):
    """Discovers role command groups lazily and maps our exceptions to exit codes for every
    subcommand (also under CliRunner)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        known = super().get_command(ctx, cmd_name)
        if known is not None:
            return known
        ep = _entry_points().get(cmd_name)
        if ep is None:
            return None
        command = ep.load()
        if not isinstance(command, click.Command):
            raise click.ClickException(f"entry point {ep.value!r} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {printable(str(exc))}", err=True)
            ctx.exit(EXIT_USAGE)
        except FedtrailError as exc:
            # messages quote others' strings (a CID from the chain, a tensor name from a blob)
            click.echo(f"error: {printable(str(exc))}", err=True)
            ctx.exit(EXIT_FAILED)
        except OSError as exc:
            # A folder or file the command writes or reads (--out, --workdir, --folder, a
            # node folder) that the system refuses: one line naming it, not a traceback.
            if exc.filename is None:
                raise
            where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
            click.echo(f"error: {printable(where)}: {exc.strerror or exc}", err=True)
            ctx.exit(EXIT_USAGE if exc.errno in _BAD_PATH_ERRNOS else EXIT_FAILED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fedtrail")
def cli() -> None:
    """Blockchain-audited federated learning for medical imaging."""


def main() -> None:
    cli.main(prog_name="fedtrail")


if __name__ == "__main__":
    main()
