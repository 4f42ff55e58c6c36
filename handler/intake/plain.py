"""Plain restore requests: the object every envelope finally carries, and its name rules.

A request names one execution by ``graphName``/``executionName`` (or snake_case), by the URNs
FunctionGraph uses, by an ``execution_info`` object as the OBS query API returns it, or as
the DWR v3 query answer does: ``workflow_urn`` (a graph URN: DWR's documented
``urn:fss:<region>:<project>:workflow:<package>:<graph>:<version>``, or the graph URN of kind
``graph`` or ``workflow``, service ``fgs`` or ``dwr``) and ``execution_id`` (the execution's
name). Every name that is given must
agree, and both names pass :func:`handler.names.validate_name` before an Item carries them.
A request that gives a state other than a failure (OBS ``FAILED``, DWR ``fail``) is skipped.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from handler.intake.identity import MAX_ID_CHARS, element_identity, hash_id, request_identity
from handler.intake.items import REJECT, RESTORE, SKIP, Item, ItemCollector
from handler.intake.messages import kind, nonempty_str, preview, show
from handler.names import InvalidNameError, validate_name

REQUEST_ID_KEY = "eventId"  # a plain request's own id, for callers that redeliver
GRAPH_NAME_KEYS = ("graphName", "graph_name")
EXECUTION_NAME_KEYS = ("executionName", "execution_name")
# A DWR query answer names the execution only by its execution_id, which is the name.
EXECUTION_ID_KEYS = ("execution_id", "executionId")
EXECUTION_INFO_KEYS = ("execution_info", "executionInfo")
STATE_KEYS = ("execution_state", "executionState", "status", "state")
FAILURE_STATES = frozenset({"failed", "fail"})  # OBS says FAILED, DWR says fail


class UrnForm(NamedTuple):
    """One URN spelling: where it may come from and which of its parts are names."""

    keys: tuple[str, ...]
    services: tuple[str, ...]  # the part after "urn:"
    kinds: tuple[str, ...]  # the fifth part
    size: int  # how many colon-separated parts
    execution_at: int | None  # the part holding the execution name
    text: str  # the form, for messages
    graph_at: int = 5  # the part holding the graph name


URN_FORMS = (
    UrnForm(
        ("execution_urn", "executionUrn"),
        ("fgs",),
        ("execution",),
        8,
        6,
        "urn:fgs:<region>:<project>:execution:<graph>:<execution>:<domain>",
    ),
    UrnForm(
        ("graph_urn", "graphUrn"),
        ("fgs",),
        ("graph",),
        6,
        None,
        "urn:fgs:<region>:<project>:graph:<graph>",
    ),
    # The project's earlier DWR data spells workflow_urn as a graph URN (urn:fgs: or
    # urn:dwr:), and "workflow" is DWR's word for a graph, so those are read too.
    UrnForm(
        ("workflow_urn", "workflowUrn"),
        ("fgs", "dwr"),
        ("graph", "workflow"),
        6,
        None,
        "urn:fgs:<region>:<project>:graph:<graph> (or urn:dwr:, or kind workflow)",
    ),
    # DWR's API pages document a query answer's workflow_urn as
    # urn:fss:<region>:<project>:workflow:<package>:<graph>:<version> (package "default",
    # version "latest"): the graph is the seventh part.
    UrnForm(
        ("workflow_urn", "workflowUrn"),
        ("fss",),
        ("workflow",),
        8,
        None,
        "urn:fss:<region>:<project>:workflow:<package>:<graph>:<version>",
        graph_at=6,
    ),
)
# The forms one key may hold, in order: a URN is read by the form its service names.
_FORMS_BY_KEYS: dict[tuple[str, ...], tuple[UrnForm, ...]] = {}
for _form in URN_FORMS:
    _FORMS_BY_KEYS[_form.keys] = (*_FORMS_BY_KEYS.get(_form.keys, ()), _form)


def read_payload(
    payload: Any, base_id: str, shape: str, source: str, what: str, out: ItemCollector
) -> None:
    """The request(s) inside one event: an object, or an array of them suffixed ``#i``."""
    if isinstance(payload, dict):
        out.add(request_item(payload, base_id, shape, source))
        return
    if isinstance(payload, (list, tuple)) and payload:
        for index, element in enumerate(payload):
            element_id = element_identity(base_id, index)
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
            event_id = request_identity(own_id)
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
            "execution_urn, graph_urn, workflow_urn/execution_id or execution_info found"
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
        executions += _present(layer, EXECUTION_NAME_KEYS + EXECUTION_ID_KEYS, prefix)
        for keys, forms in _FORMS_BY_KEYS.items():
            for label, urn in _present(layer, keys, prefix):
                form = _form_of(urn, forms)
                parts = _parse_urn(urn, label, form, forms)
                if isinstance(parts, str):
                    return parts
                graphs.append((label, parts[form.graph_at]))
                if form.execution_at is not None:
                    executions.append((label, parts[form.execution_at]))
    return graphs, executions


def _present(layer: dict[str, Any], keys: tuple[str, ...], prefix: str) -> list[tuple[str, Any]]:
    """The non-null values of ``keys`` in ``layer``; JSON null counts as absent."""
    return [(prefix + key, layer[key]) for key in keys if layer.get(key) is not None]


def _form_of(value: object, forms: tuple[UrnForm, ...]) -> UrnForm:
    """The form whose service ``value`` names (the first form when none does)."""
    service = value.split(":")[1] if isinstance(value, str) and value.count(":") else None
    return next((form for form in forms if service in form.services), forms[0])


def _parse_urn(
    value: object, label: str, form: UrnForm, alternatives: tuple[UrnForm, ...] = ()
) -> list[str] | str:
    """The colon-separated parts of a URN of ``form``, or what is wrong with it.

    ``alternatives`` are every form the key may hold: a URN of none of their services is
    told each of them."""
    if not isinstance(value, str):
        return f"malformed {label}: must be a string, not {kind(value)}"
    shown = preview(value, 160)
    parts = value.split(":")
    if len(parts) < 2 or parts[0] != "urn" or parts[1] not in form.services:
        services = [s for option in (alternatives or (form,)) for s in option.services]
        starts = " or ".join(repr(f"urn:{service}:") for service in services)
        return f"malformed {label}: {shown} does not start with {starts}"
    if len(parts) > 4 and parts[4] not in form.kinds:
        expected = " or ".join(map(repr, form.kinds))
        return f"malformed {label}: {shown} has kind {preview(parts[4])}, expected {expected}"
    if len(parts) != form.size or not all(parts):
        return f"malformed {label}: {shown} is not of the form {form.text}"
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
