"""The `siamese-lab` command line: parse, build a request, one library call, print.

The only package that imports click. Commands load on first use: `siamese-lab --help`,
`siamese-lab COMMAND --help` and a mistyped command answer without importing torch, MLflow
or Optuna, and each command imports only what it needs. The group resolves the environment
(home folder, MLflow target, storage) once and hands it to every command as `ctx.obj`.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click
from click.shell_completion import CompletionItem

from search.cli.common import BadInput, home_path
from search.env import LabEnv, forget_made_homes, remove_made_homes
from search.reader_gone import reader_may_leave
from siamese.errors import JobFailed, SiameseInputError
from tracking.drawing_notes import hush_matplotlib_notes

# name -> (module, attribute, the line `--help` lists; tests/search/test_cli_lazy.py checks
# that it is the command's own)
COMMANDS = {
    "data": ("search.cli.data", "data", "Inspect the data alone."),
    "diagnose": (
        "search.cli.tracking",
        "diagnose_run",
        "Print a logged run's diagnosis with its evidence and fixes.",
    ),
    "predict": (
        "search.cli.tracking",
        "predict",
        "Print P(same object) for each image pair: LEFT RIGHT, or --pairs FILE.csv.",
    ),
    "promote": (
        "search.cli.tracking",
        "promote",
        "Register a converged run's model and point an alias (default champion) at it.",
    ),
    "report": (
        "search.cli.search",
        "report",
        "Study-level failure map, best trial, diagnoses and parameter importances.",
    ),
    "search": (
        "search.cli.search",
        "search",
        "Create or resume a study and run its trials; every trial is logged to MLflow.",
    ),
    "train": (
        "search.cli.train",
        "train",
        "Train one model, diagnose it, and log it all to MLflow.",
    ),
    "ui": (
        "search.cli.tracking",
        "ui",
        "Start the MLflow UI on the local store (Ctrl-C stops it).",
    ),
    "worker": (
        "search.cli.search",
        "worker",
        "Join an existing study from this process (or another machine) and run trials.",
    ),
}


# A full disk or quota (siamese.errors.DiskFullError is one of these): exit 1, one line.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class LabGroup(click.Group):
    """Maps outcomes to DESIGN.md's exit codes: bad input 2 (one line, no traceback),
    interrupted 130, a full disk 1 (one line), unexpected errors 1 (with the traceback,
    which is then useful).
    Loads a command only when it runs or shows its own help."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **kwargs: Any
    ) -> Any:
        kwargs.pop("standalone_mode", None)  # always ours: CliRunner passes it too
        hush_matplotlib_notes()  # from the main thread, before any command (see the module)
        forget_made_homes()
        with reader_may_leave():  # `train | head -3` trains on (search.reader_gone)
            code = self._exit_status(args, prog_name, **kwargs)
        sys.exit(code)

    def _exit_status(self, args: Sequence[str] | None, prog_name: str | None, **kwargs: Any) -> int:
        """The command's exit status; its error, if any, said in one line on stderr."""
        try:
            code = super().main(args, prog_name, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `siamese-lab`, `siamese-lab data`
            click.echo(exc.format_message())
            return 0
        except click.UsageError as exc:
            remove_made_homes()  # bad input leaves no empty home behind
            click.echo(f"error: {exc.format_message()}", err=True)
            return 2
        except (KeyboardInterrupt, click.Abort):
            click.echo("interrupted", err=True)
            return 130
        except click.ClickException as exc:
            if exc.exit_code == 2:
                remove_made_homes()
            exc.show()
            return exc.exit_code
        except JobFailed as exc:
            click.echo(f"error: {exc}", err=True)
            return 1
        except OSError as exc:
            if exc.errno not in FULL_DISK:
                raise
            # Not bad input (2) but no bug either: one line naming where, no traceback.
            click.echo(f"error: {exc}", err=True)
            return 1
        return code if isinstance(code, int) else 0

    def invoke(self, ctx: click.Context) -> Any:
        # The one place where bad input (the library's SiameseInputError) becomes exit 2.
        try:
            return super().invoke(ctx)
        except SiameseInputError as exc:
            raise BadInput(str(exc)) from exc

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # click suggests a near miss only among registered commands; these load lazily.
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            close = difflib.get_close_matches(name, COMMANDS, n=1)
            ctx.fail(
                f"No such command {name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
            )
        return super().resolve_command(ctx, args)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        # Command names from the table: completing `siamese-lab tr<TAB>` imports nothing.
        names = [name for name in sorted(COMMANDS) if name.startswith(incomplete)]
        commands = [CompletionItem(name, help=COMMANDS[name][2]) for name in names]
        return commands + click.Command.shell_complete(self, ctx, incomplete)  # the options

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """From the table above instead of importing every command; whole lines, wrapped."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in sorted(COMMANDS)])


@click.group(cls=LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(),  # text, so that an empty one is seen (a Path would be ".")
    help="folder of the embedded stores and checkpoints (default ~/.siamese-lab)",
)
@click.version_option(package_name="siamese-lab")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Train, search and diagnose Siamese image-pair networks."""
    env = LabEnv.from_environ(os.environ)
    ctx.obj = env.with_overrides(home=home_path(home) if home is not None else None)


def main() -> None:
    """The `siamese-lab` script: the command, then an exit without the interpreter's
    teardown (search.cli.fast_exit; 0.3-1.2 s). An error's traceback ends it as usual."""
    from search.cli.fast_exit import exit_without_teardown

    try:
        cli()
    except SystemExit as done:
        exit_without_teardown(done.code)


if __name__ == "__main__":
    main()
