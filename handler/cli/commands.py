"""``obs-workflow-restore``: operate the function from a terminal.

Every command reads the same environment variables as the deployed function (see the README's
settings table), so what works here works there:

    obs-workflow-restore restore --graph G --execution E   one restore, admitted as an event
        [--force [--reason T]] [--dry-run]
    obs-workflow-restore replay FILE|-                      a saved delivery through the pipeline
    obs-workflow-restore sweep [--graph G ...] [--lookback 6h] [--dry-run]
                                                            list failed executions, restore them
    obs-workflow-restore serve [--port 8080]                the HTTP function (functions-framework)
    obs-workflow-restore emulator [--api obs|dwr] [...]     the local workflow API emulator
    obs-workflow-restore state                              recent dedupe and budget records
    obs-workflow-restore state forget EVENT_ID              drop a recorded outcome or marker
    obs-workflow-restore state reset-budget GRAPH/EXECUTION drop an execution's restore budget
    obs-workflow-restore pause GRAPH|--all [--for 2h] [--reason T]  stop restores for a while
    obs-workflow-restore resume GRAPH|--all                 let them go on
    obs-workflow-restore policy check FILE                  validate restore rules, print them
    obs-workflow-restore policy explain --graph G [--error T]  which rule decides, and how

``--json`` prints machine-readable results on every command that prints results; ``-v``
(before or after the command) adds the function's own log lines on standard error - the
start-up settings document and one line per item - which are otherwise left out. Exit codes,
one rule for every command (:func:`handler.cli.output.exit_code`): 0 every item succeeded or
needed nothing, 1 some item failed or must be retried, 2 could not run (a flag, a setting, an
unreadable file, an unreachable state store - said in one line on standard error).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from handler import __version__
from handler.cli import pause, policy, restore, serve, state, sweep
from handler.cli.output import EXIT_COULD_NOT_RUN
from handler.settings import SettingsError
from handler.store import StoreUnavailable


def main(argv: list[str] | None = None) -> int:
    """Run one command; the return value is the process exit code.

    The one place every command's failure ends: one line on standard error and exit 2, never
    a traceback - scripts and schedulers read the last line, and a traceback may quote a
    setting. An exception nobody expected is named by its type only, for the same reason.
    """
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "emulator":
            from handler.devtools.emulator import cli as emulator_cli

            return emulator_cli.main(rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.run(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130  # the shell's code for "stopped by Ctrl-C", not a failure of the command
    except Exception as exc:  # the last resort: no command may end in a traceback
        print(f"error: unexpected {type(exc).__name__}; the command stopped", file=sys.stderr)
        return EXIT_COULD_NOT_RUN


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes end in one line on standard error and exit 2, like every other error
    here: scripts and schedulers that capture the output get the reason, not a usage page."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="obs-workflow-restore",
        description="Restore failed OBS workflow executions; settings come from the environment.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_OneLineErrors
    )
    restore.add_commands(commands)
    sweep.add_commands(commands)
    serve.add_commands(commands)
    # Its flags are the emulator's own: main() hands everything after the name to its parser.
    commands.add_parser(
        "emulator",
        help="run the local workflow API emulator, OBS or DWR (see its --help)",
        add_help=False,
    )
    state.add_commands(commands)
    pause.add_commands(commands)
    policy.add_commands(commands)
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    _add_verbose(commands)
    return parser


VERBOSE_HELP = "also show the function's log lines: the start-up settings, one line per item"


def _add_verbose(subparsers: argparse._SubParsersAction) -> None:
    """``-v`` after the command name too (``replay FILE -v``), wherever a user puts it.

    SUPPRESS as the default: a subcommand without the flag leaves the top level's value.
    """
    for name, command in subparsers.choices.items():
        if name == "emulator":  # its flags are the emulator's own
            continue
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_verbose(action)
