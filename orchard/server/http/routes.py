"""The REST routing table of the V2 service, generated from its ``google.api.http`` options.

Every method of ``clarifai.api.V2`` carries an ``HttpRule`` (a verb, a path template, the body
rule and ``additional_bindings``); :func:`bindings` reads them all, and :class:`RouteTable`
indexes them in one trie per HTTP verb, built once per process.

Matching walks the trie one path segment at a time, so a lookup costs the path's length, not
the number of routes. Where several templates match one path, the one with more literal
segments wins (``/v2/models/versions/upload`` over ``/v2/models/{model_id}/versions/{id}``
shapes); between as many literals, the one whose first literal comes earlier; between two
bindings of the same template (``ListLogEntries`` and ``StreamLogEntries`` share theirs), the
first in the service's order, unless the request asks for a stream (``Accept`` of
``text/event-stream`` or ``application/x-ndjson``), which then picks the server-streaming one.
A trailing slash is the same path without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)

from orchard.wire import SERVICE

VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Variable:
    """A ``{field.path}`` segment: the request field (as its chain of descriptors) it sets."""

    index: int  # which path segment
    path: str  # "user_app_id.user_id"
    fields: tuple[FieldDescriptor, ...]


@dataclass(frozen=True)
class Binding:
    """One HTTP binding of one RPC."""

    method: MethodDescriptor
    verb: str  # "GET", "POST" ...
    template: str
    segments: tuple[str | None, ...]  # a literal, or None for a variable
    variables: tuple[Variable, ...]
    body: str  # "*": the whole body; "": none (query string); else the field it fills
    order: int  # the binding's place in the service (ties go to the earlier)

    @property
    def rpc(self) -> str:
        return str(self.method.name)

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def literals(self) -> int:
        return sum(1 for s in self.segments if s is not None)

    def rank(self, wants_stream: bool) -> tuple[int, tuple[int, ...], int, int]:
        """Greater is more specific: more literals, earlier literals, then the stream choice,
        then the earlier binding."""
        shape = tuple(1 if s is not None else 0 for s in self.segments)
        return (self.literals, shape, int(self.streaming == wants_stream), -self.order)


@dataclass(frozen=True)
class Match:
    binding: Binding
    values: tuple[str, ...]  # the variables' values, in the binding's order


def field_chain(message: Descriptor, path: str) -> tuple[FieldDescriptor, ...]:
    """The fields a dotted path names, from ``message`` down; ValueError names the part that
    is not a field."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in path.split("."):
        found = current.fields_by_name.get(part) if current is not None else None
        if found is None:
            raise ValueError(f"{path!r} is not a field path of {message.full_name}")
        chain.append(found)
        current = found.message_type
    return tuple(chain)


def parse_template(
    template: str, request: Descriptor
) -> tuple[tuple[str | None, ...], tuple[Variable, ...]]:
    """The segments and variables of a path template like ``/v2/users/{user_app_id.user_id}``."""
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} does not start with '/'")
    segments: list[str | None] = []
    variables: list[Variable] = []
    for index, part in enumerate(template.strip("/").split("/")):
        if part.startswith("{") and part.endswith("}"):
            name, _, pattern = part[1:-1].partition("=")
            if pattern not in ("", "*"):
                raise ValueError(f"{template!r}: only single-segment variables are supported")
            variables.append(Variable(index, name, field_chain(request, name)))
            segments.append(None)
        elif "{" in part or "}" in part or "*" in part or ":" in part:
            raise ValueError(f"{template!r}: segment {part!r} is not a literal or a variable")
        else:
            segments.append(part)
    return tuple(segments), tuple(variables)


def _rules(method: MethodDescriptor) -> Iterator[http_pb2.HttpRule]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return
    rule = options.Extensions[annotations_pb2.http]
    yield rule
    yield from rule.additional_bindings


def bindings(service: ServiceDescriptor = SERVICE) -> list[Binding]:
    """Every HTTP binding of every method of ``service``, in the service's order."""
    found: list[Binding] = []
    for method in service.methods:
        for rule in _rules(method):
            verb = rule.WhichOneof("pattern")
            if verb not in VERBS:
                continue  # "custom" verbs: V2 has none
            template = getattr(rule, verb)
            segments, variables = parse_template(template, method.input_type)
            if rule.body not in ("", "*"):
                field_chain(method.input_type, rule.body)  # a body field must exist
            found.append(
                Binding(method, verb.upper(), template, segments, variables, rule.body, len(found))
            )
    return found


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    variable: _Node | None = None
    ends: list[Binding] = field(default_factory=list)


class RouteTable:
    """The bindings by verb, in tries; :meth:`match` finds the binding of a request."""

    def __init__(self, all_bindings: Iterable[Binding]) -> None:
        self.roots: dict[str, _Node] = {}
        self.by_rpc: dict[str, list[Binding]] = {}
        for binding in all_bindings:
            self._add(binding)

    def _add(self, binding: Binding) -> None:
        node = self.roots.setdefault(binding.verb, _Node())
        for segment in binding.segments:
            if segment is None:
                node.variable = node.variable or _Node()
                node = node.variable
            else:
                node = node.literals.setdefault(segment, _Node())
        node.ends.append(binding)
        self.by_rpc.setdefault(binding.rpc, []).append(binding)

    def match(self, verb: str, segments: list[str], wants_stream: bool = False) -> Match | None:
        """The most specific binding of ``verb`` for a path split into decoded segments."""
        root = self.roots.get(verb)
        if root is None:
            return None
        candidates: list[tuple[Binding, tuple[str, ...]]] = []
        _collect(root, segments, 0, (), candidates)
        if not candidates:
            return None
        best, captured = max(candidates, key=lambda c: c[0].rank(wants_stream))
        return Match(best, captured)

    def verbs_for(self, segments: list[str]) -> list[str]:
        """The verbs some binding of this path answers (for a 405's Allow)."""
        verbs = []
        for verb, root in self.roots.items():
            found: list[tuple[Binding, tuple[str, ...]]] = []
            _collect(root, segments, 0, (), found)
            if found:
                verbs.append(verb)
        return sorted(verbs)


def _collect(
    node: _Node,
    segments: list[str],
    at: int,
    captured: tuple[str, ...],
    out: list[tuple[Binding, tuple[str, ...]]],
) -> None:
    """Every binding under ``node`` that matches ``segments[at:]``, with its variables."""
    if at == len(segments):
        out.extend((binding, captured) for binding in node.ends)
        return
    segment = segments[at]
    child = node.literals.get(segment)
    if child is not None:
        _collect(child, segments, at + 1, captured, out)
    if node.variable is not None and segment:
        _collect(node.variable, segments, at + 1, (*captured, segment), out)


def split_path(raw_path: str) -> list[str]:
    """A request path's segments: percent-decoded one by one (so ``%2F`` stays inside its
    segment), with one trailing slash tolerated."""
    path = raw_path.split("?", 1)[0]
    if path.endswith("/") and len(path) > 1:
        path = path[:-1]
    return [unquote(part) for part in path.lstrip("/").split("/")]
