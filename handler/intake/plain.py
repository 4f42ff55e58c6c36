"""Plain restore requests: the object every envelope finally carries, and its name rules.

A request names one execution by ``graphName``/``executionName`` (or snake_case), by the URNs
FunctionGraph uses, or by an ``execution_info`` object as the query API returns it; every
name that is given must agree, and both names pass :func:`handler.names.validate_name` before
an Item carries them. A request that gives a state other than a failure is skipped.
"""

from __future__ import annotations

from typing import Any

from handler.intake.identity import MAX_ID_CHARS, hash_id, safe_id
from handler.intake.items import REJECT, RESTORE, SKIP, Item, ItemCollector
from handler.intake.messages import kind, nonempty_str, preview, show
from handler.names import InvalidNameError, validate_name

REQUEST_ID_KEY = "eventId"  # a plain request's own id, for callers that redeliver
GRAPH_NAME_KEYS = ("graphName", "graph_name")
EXECUTION_NAME_KEYS = ("executionName", "execution_name")
GRAPH_URN_KEYS = ("graph_urn", "graphUrn")
EXECUTION_URN_KEYS = ("execution_urn", "executionUrn")
EXECUTION_INFO_KEYS = ("execution_info", "executionInfo")
STATE_KEYS = ("execution_state", "executionState", "status", "state")
FAILURE_STATES = frozenset({"failed", "fail"})

EXECUTION_URN_FORM = "urn:fgs:<region>:<project>:execution:<graph>:<execution>:<domain>"
GRAPH_URN_FORM = "urn:fgs:<region>:<project>:graph:<graph>"


def read_payload(
    payload: Any, base_id: str, shape: str, source: str, what: str, out: ItemCollector
) -> None:
    """The request(s) inside one event: an object, or an array of them suffixed ``#i``."""
    if isinstance(payload, dict):
        out.add(request_item(payload, base_id, shape, source))
        return
    if isinstance(payload, (list, tuple)) and payload:
        for index, element in enumerate(payload):
            element_id = safe_id(f"{base_id}#{index}")
            if isinstance(element, dict):
                out.add(request_item(element, element_id, shape, source))
            else:
                reason = f"{what}[{index}] is {kind(element)}, not an object"
                out.add(Item(REJECT, element_id, shape, reason=reason, source=source))
        return
    if isinstance(payload, (list, tuple)):
        reason = f"{what} is an empty array"
    else:
        reason = f"{what} is {kind(payload)}, not a restore request object"
    out.add(Item(REJECT, base_id, shape, reason=reason, source=source))


def request_item(request: dict[str, Any], event_id: str | None, shape: str, source: str) -> Item:
    """Decide one request object: restore, skip (not failed) or reject (unreadable).

    Readability is decided first, so a malformed request is reported as such whatever its
    state. ``event_id`` is None for plain requests, whose identity is their normalised hash.
    """
    if event_id is None:
        own_id = request.get(REQUEST_ID_KEY)
        if own_id is not None and not (nonempty_str(own_id) and len(own_id) <= MAX_ID_CHARS):
            reason = f"{REQUEST_ID_KEY} must be a non-empty string of at most {MAX_ID_CHARS} chars"
            return Item(REJECT, hash_id({"rejected": request}), shape, reason=reason)
        if own_id is not None:
            event_id = safe_id(f"request:{own_id}")
    by_content = event_id is None
    outcome = _read_request(request)
    if isinstance(outcome, str):
        event_id = event_id or hash_id({"rejected": request})
        return Item(REJECT, event_id, shape, reason=outcome, source=source)
    graph, execution, state = outcome
    if state is not None:
        normalised = {"graph": graph, "execution": execution, "state": state}
        reason = f"execution state is {show(state)}, not a failure"
        event_id = event_id or hash_id(normalised)
        return Item(SKIP, event_id, shape, graph, execution, reason, source, by_content)
    event_id = event_id or hash_id({"graph": graph, "execution": execution})
    return Item(RESTORE, event_id, shape, graph, execution, "", source, by_content)


def _read_request(request: dict[str, Any]) -> tuple[str, str, Any] | str:
    """``(graph, execution, non-failure state or None)`` of a request, or why it is unusable.

    Names may come from explicit keys, from URNs, and from an ``execution_info`` object as
    the query API returns it; every source that is present must agree.
    """
    layers = _layers(request)
    if isinstance(layers, str):
        return layers
    sources = _name_sources(layers)
    if isinstance(sources, str):
        return sources
    graphs, executions = sources
    if not graphs and not executions:
        return (
            "not a restore request: no graphName/executionName, graph_name/execution_name, "
            "execution_urn, graph_urn or execution_info found"
        )
    graph, problem = _one_name(graphs, "graphName")
    if problem is None:
        execution, problem = _one_name(executions, "executionName")
    if problem is not None:
        return problem
    return graph, execution, _non_failure_state(layers)


def _layers(request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | str:
    """The request itself and, when present, its ``execution_info`` object, with prefixes."""
    layers = [("", request)]
    for key in EXECUTION_INFO_KEYS:
        info = request.get(key)
        if info is None:
            continue
        if not isinstance(info, dict):
            return f"{key} must be an object, not {kind(info)}"
        layers.append((f"{key}.", info))
    return layers


def _name_sources(
    layers: list[tuple[str, dict[str, Any]]],
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]] | str:
    """Every ``(where, value)`` a graph and an execution name is given at, or a URN problem."""
    graphs: list[tuple[str, Any]] = []
    executions: list[tuple[str, Any]] = []
    for prefix, layer in layers:
        graphs += _present(layer, GRAPH_NAME_KEYS, prefix)
        executions += _present(layer, EXECUTION_NAME_KEYS, prefix)
        for label, urn in _present(layer, EXECUTION_URN_KEYS, prefix):
            parts = _parse_urn(urn, label, "execution", 8, EXECUTION_URN_FORM)
            if isinstance(parts, str):
                return parts
            graphs.append((label, parts[5]))
            executions.append((label, parts[6]))
        for label, urn in _present(layer, GRAPH_URN_KEYS, prefix):
            parts = _parse_urn(urn, label, "graph", 6, GRAPH_URN_FORM)
            if isinstance(parts, str):
                return parts
            graphs.append((label, parts[5]))
    return graphs, executions


def _present(layer: dict[str, Any], keys: tuple[str, ...], prefix: str) -> list[tuple[str, Any]]:
    """The non-null values of ``keys`` in ``layer``; JSON null counts as absent."""
    return [(prefix + key, layer[key]) for key in keys if layer.get(key) is not None]


def _parse_urn(value: object, label: str, urn_kind: str, size: int, form: str) -> list[str] | str:
    """The colon-separated parts of a FunctionGraph URN of ``urn_kind``, or what is wrong."""
    if not isinstance(value, str):
        return f"malformed {label}: must be a string, not {kind(value)}"
    shown = preview(value, 160)
    parts = value.split(":")
    if parts[:2] != ["urn", "fgs"]:
        return f"malformed {label}: {shown} does not start with 'urn:fgs:'"
    if len(parts) > 4 and parts[4] != urn_kind:
        return f"malformed {label}: {shown} has kind {preview(parts[4])}, expected {urn_kind!r}"
    if len(parts) != size or not all(parts):
        return f"malformed {label}: {shown} is not of the form {form}"
    return parts


def _one_name(sources: list[tuple[str, Any]], field: str) -> tuple[str, str | None]:
    """``(name, None)`` when every source gives the same valid name, else ``("", problem)``."""
    if not sources:
        return "", f"missing {field}: the request gives no {field} and no URN carrying it"
    first_label, first = sources[0]
    for label, value in sources[1:]:
        if value != first:
            return "", (
                f"conflicting {field}: {first_label} says {preview(first)} "
                f"but {label} says {preview(value)}"
            )
    try:
        return validate_name(first, field), None
    except InvalidNameError as exc:
        return "", str(exc)


def _non_failure_state(layers: list[tuple[str, dict[str, Any]]]) -> Any:
    """The first state given that is not a failure, or None when every given state is one."""
    for _prefix, layer in layers:
        for _label, state in _present(layer, STATE_KEYS, ""):
            if not (isinstance(state, str) and state.strip().lower() in FAILURE_STATES):
                return state
    return None
