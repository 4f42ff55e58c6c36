"""A small, stateful local stand-in for the workflow execution API.

Demos, the CLI, integration tests and benchmarks need something that answers like the real
service - signed requests checked byte for byte, executions that really change state, the
documented JSON answers - without a cloud account. pytest-httpserver answers one canned reply
at a time; this emulator keeps executions in memory, so a restore loop can be watched end to
end, and it injects the faults a client must survive (5xx, resets, garbage, redirects, latency).

Modules: :mod:`.core` (executions, faults, the server's life: what every API shares),
:mod:`.faults` (fault injection), :mod:`.wire` (the keep-alive HTTP handler), one module per
API - :mod:`.obs` (the OBS v2 API, :class:`Emulator`) and :mod:`.dwr` (the DWR v3 API,
:class:`DwrEmulator`): paths, signature check, answers - :mod:`.notify` (SMN publish and
Cloud Eye metric data, served by :class:`DwrEmulator` beside DWR), :mod:`.gateway` (the
``SDK-HMAC-SHA256`` check they share) and :mod:`.cli` (the command line, ``--api obs|dwr``).
Development only: nothing under ``handler/devtools`` ships in a function package, and no
production module imports it.

Python use::

    from handler.devtools.emulator import Emulator

    with Emulator(credentials={"AK": "SK"}) as emu:     # starts on a free loopback port
        emu.seed("graph-1", "exec-1", "FAILED")
        ...  # point a client at emu.url
        assert emu.state("graph-1", "exec-1") == "RUNNING"

``emu.start(host, port)`` / ``emu.stop()`` do the same by hand; ``with emu.start(port=9000):``
also works (entering a running emulator does not start it again).

Seed file (JSON; every key but ``credentials`` is optional, unknown keys are rejected)::

    {
      "credentials": {"AK": "SK"},
      "security_token": null,
      "region": "cn-north-4", "project_id": "...", "domain_id": "...",
      "after_restore": {"state": "FAILED", "delay": 0.5},
      "graphs": ["graph-without-executions"],
      "executions": [{"graph": "graph-1", "execution": "exec-1", "state": "FAILED",
                      "started_at": "2026-11-27T10:00:00Z", "stopped_at": "2026-11-27T10:05:00Z",
                      "execution_type": "APICALL", "error_message": "why it failed"}]
    }

Only ``graph`` and ``execution`` are required in an execution entry. For thousands of
executions (a sweep's tests and benchmark), ``emu.seed_many(entries)`` takes the same entries
from Python and checks them all before applying any. Both APIs serve their list calls
(executions and graphs); ``emu.faults_for(graph=..., operation="list")`` aims faults at one
graph's listing.
"""

from handler.devtools.emulator.cli import EMULATORS, main
from handler.devtools.emulator.core import Call, read_seed
from handler.devtools.emulator.dwr import DwrEmulator
from handler.devtools.emulator.obs import STATES, Emulator

__all__ = ["EMULATORS", "STATES", "Call", "DwrEmulator", "Emulator", "main", "read_seed"]
