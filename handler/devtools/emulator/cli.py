"""The emulator's command line: ``python -m handler.devtools.emulator`` and
``obs-workflow-restore emulator``.

A wrapper (the CLI, the benchmarks, a shell script) starts the emulator as a process and needs
one line to wait for: the URL, printed as the only line on stdout; it then serves until SIGINT
or SIGTERM. The secret key is never printed or logged; give it in
``EMULATOR_SECRET_ACCESS_KEY`` rather than with ``--secret-key`` (which still works), so it
does not show in ``ps``::

    EMULATOR_SECRET_ACCESS_KEY=SK obs-workflow-restore emulator --port 9000 \\
        --seed seed.json --execution graph-1/exec-1=FAILED --access-key AK \\
        --fail-next 2 --fail-status 503

The faults can be queued from the command line too - ``--fail-next N [--fail-status S]
[--retry-after S]``, ``--reset-next N [--reset-applied]``, ``--garbage-next N``,
``--redirect-next N [--redirect-location URL]`` - and are served in that order.

``--api dwr --project-id P`` serves the DWR v3 API for project P instead of the OBS one
(states in DWR's words: ``--execution graph-1/exec-1=fail``), and beside it SMN publish and
Cloud Eye metric data (:mod:`.notify`): ``--topic NAME`` (repeatable) creates the SMN topic
``urn:smn:<region>:<project>:NAME``.

``--broken-downstream SECONDS [--fixed-after SECONDS] [--downstream NAME]`` plays an outage:
every restored execution fails again SECONDS after its restore, naming the downstream, until
it is fixed ``--fixed-after`` seconds after the emulator started (never, without it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from handler.devtools.emulator.core import EmulatorCore, read_seed
from handler.devtools.emulator.dwr import DwrEmulator
from handler.devtools.emulator.faults import DEFAULT_DOWNSTREAM
from handler.devtools.emulator.obs import Emulator
from handler.devtools.emulator.wire import logger

# The emulator class for each workflow API, by the name WORKFLOW_API and --api use.
EMULATORS: dict[str, type[EmulatorCore]] = {"obs": Emulator, "dwr": DwrEmulator}


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; returns the process exit code.

    ``environ`` (default: the process environment) may carry the secret key as
    ``EMULATOR_SECRET_ACCESS_KEY``.
    """
    from handler.settings import emulator_secret_key

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse has printed why
        return int(exc.code or 0)
    if args.access_key and not args.secret_key:
        args.secret_key = emulator_secret_key(environ)
    try:
        emulator = _emulator_from_args(args).start(args.host, args.port)
    except (OSError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    with _call_log(enabled=args.verbose):
        _serve_until_signalled(emulator)
    return 0


def _serve_until_signalled(emulator: EmulatorCore) -> None:
    """Print the URL - the one line a wrapper waits for - and serve until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = _on_signals((signal.SIGINT, signal.SIGTERM), lambda *_: stop.set())
    try:
        print(emulator.url, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:  # main() run off the main thread has no signal handlers
        pass
    finally:
        emulator.stop()
        _on_signals(previous, None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obs-workflow-restore emulator",
        description="Local stand-in for a workflow execution API - OBS workflows or DWR (--api) "
        "- on loopback; prints its URL, serves until stopped.",
    )
    parser.add_argument(
        "--api",
        choices=sorted(EMULATORS),
        default="obs",
        help="the API to serve: obs, or dwr with --project-id (default: obs)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9000, help="port; 0 picks a free one")
    parser.add_argument("--seed", metavar="FILE", help="JSON seed file")
    parser.add_argument(
        "--execution",
        action="append",
        default=[],
        metavar="GRAPH/EXECUTION[=STATE]",
        help="seed an execution (state defaults to FAILED); repeatable",
    )
    parser.add_argument("--access-key", help="access key id to accept")
    parser.add_argument(
        "--secret-key",
        help="its secret key (never printed); prefer the EMULATOR_SECRET_ACCESS_KEY "
        "environment variable, which `ps` does not show",
    )
    parser.add_argument("--security-token", help="require this security token")
    parser.add_argument("--region")
    parser.add_argument("--project-id")
    parser.add_argument("--domain-id")
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="NAME",
        help="create this SMN topic (--api dwr); repeatable",
    )
    parser.add_argument(
        "--after-restore",
        metavar="STATE:SECONDS",
        help="after each restore, flip RUNNING to STATE (FAILED or SUCCESS) after SECONDS",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="delay every answer (s)")
    outage = parser.add_argument_group(
        "outage", "a broken downstream: every restored run fails again until it is fixed"
    )
    outage.add_argument(
        "--broken-downstream",
        type=float,
        metavar="SECONDS",
        help="every restored execution fails again SECONDS after its restore",
    )
    outage.add_argument(
        "--fixed-after",
        type=float,
        metavar="SECONDS",
        help="the downstream is fixed SECONDS after the emulator starts (default: never)",
    )
    outage.add_argument(
        "--downstream",
        default=DEFAULT_DOWNSTREAM,
        metavar="NAME",
        help=f"the downstream the error messages name (default: {DEFAULT_DOWNSTREAM})",
    )
    parser.add_argument("--verbose", action="store_true", help="log each call to stderr")
    faults = parser.add_argument_group(
        "faults", "answers for the next requests, whatever they are, served in this order"
    )
    faults.add_argument("--fail-next", type=int, default=0, metavar="N", help="fail N requests")
    faults.add_argument(
        "--fail-status", type=int, default=503, metavar="S", help="their status (default: 503)"
    )
    faults.add_argument("--retry-after", metavar="S", help="their Retry-After header")
    faults.add_argument(
        "--reset-next", type=int, default=0, metavar="N", help="reset N connections"
    )
    faults.add_argument(
        "--reset-applied",
        action="store_true",
        help="carry those requests out before resetting (only the answer is lost)",
    )
    faults.add_argument(
        "--garbage-next", type=int, default=0, metavar="N", help="answer N with an HTML 502"
    )
    faults.add_argument(
        "--redirect-next", type=int, default=0, metavar="N", help="answer N with a 302"
    )
    faults.add_argument("--redirect-location", default="http://127.0.0.1:9/", metavar="URL")
    return parser


def _emulator_from_args(args: argparse.Namespace) -> EmulatorCore:
    if bool(args.access_key) != bool(args.secret_key):
        raise ValueError(
            "--access-key needs its secret key: set EMULATOR_SECRET_ACCESS_KEY (or give "
            "--secret-key), and --secret-key needs --access-key"
        )
    seed = read_seed(args.seed) if args.seed else {}
    options: dict[str, Any] = {}
    if args.access_key:
        options["credentials"] = {args.access_key: args.secret_key}
    for name in ("security_token", "region", "project_id", "domain_id"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.after_restore:
        options["after_restore"] = _after_restore_from_flag(args.after_restore, EMULATORS[args.api])
    if args.topic:
        if not hasattr(EMULATORS[args.api], "create_topic"):
            raise ValueError("--topic needs --api dwr (the emulator that serves SMN)")
        options["topics"] = args.topic
    if not seed.get("credentials") and "credentials" not in options:
        raise ValueError("no credentials: give --access-key/--secret-key or a seed with them")
    emulator = EMULATORS[args.api].from_seed(seed, **options)
    emulator.load_executions(_execution_from_flag(flag) for flag in args.execution)
    emulator.latency(args.latency)
    _queue_faults_from_args(emulator, args)
    _break_downstream_from_args(emulator, args)
    return emulator


def _break_downstream_from_args(emulator: EmulatorCore, args: argparse.Namespace) -> None:
    if args.broken_downstream is None:
        if args.fixed_after is not None:
            raise ValueError("--fixed-after needs --broken-downstream SECONDS")
        return
    if not args.broken_downstream >= 0:
        raise ValueError(f"--broken-downstream wants seconds >= 0, got {args.broken_downstream}")
    fixed_at = None
    if args.fixed_after is not None:
        if not args.fixed_after >= 0:
            raise ValueError(f"--fixed-after wants seconds >= 0, got {args.fixed_after}")
        fixed_at = emulator._clock() + args.fixed_after
    emulator.break_downstream(args.broken_downstream, name=args.downstream, fixed_at=fixed_at)


def _queue_faults_from_args(emulator: EmulatorCore, args: argparse.Namespace) -> None:
    if not 100 <= args.fail_status <= 599:
        raise ValueError(f"--fail-status wants an HTTP status, got {args.fail_status}")
    emulator.fail_next(args.fail_next, args.fail_status, retry_after=args.retry_after)
    emulator.reset_next(args.reset_next, applied=args.reset_applied)
    emulator.garbage_next(args.garbage_next)
    emulator.redirect_next(args.redirect_next, location=args.redirect_location)


def _execution_from_flag(flag: str) -> dict[str, str]:
    target, _, state = flag.partition("=")
    graph, slash, execution = target.partition("/")
    if not slash:
        raise ValueError(f"--execution wants GRAPH/EXECUTION[=STATE], got {flag!r}")
    return {"graph": graph, "execution": execution, **({"state": state} if state else {})}


def _after_restore_from_flag(flag: str, api: type[EmulatorCore]) -> tuple[str, float]:
    state, _, delay = flag.partition(":")
    try:
        return (api.state_word(state), float(delay or 0))
    except ValueError:
        raise ValueError(f"--after-restore wants STATE:SECONDS, got {flag!r}") from None


def _on_signals(
    signals: Sequence[signal.Signals] | Mapping[signal.Signals, Any], handler: Any
) -> dict[signal.Signals, Any]:
    """Install ``handler`` (or restore a previous mapping); only the main thread may."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    targets = signals.items() if isinstance(signals, Mapping) else ((s, handler) for s in signals)
    return {sig: signal.signal(sig, action) for sig, action in targets}


@contextlib.contextmanager
def _call_log(*, enabled: bool) -> Iterator[None]:
    """Log each call to stderr while serving, and undo it so a wrapper's logging is untouched."""
    if not enabled:
        yield
        return
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    level = logger.level
    logger.addHandler(stream)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(stream)
        logger.setLevel(level)
