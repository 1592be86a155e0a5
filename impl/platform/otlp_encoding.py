"""Spans to the OTLP protobuf bytes an OTLP/HTTP collector takes, written directly in the
protobuf wire format (opentelemetry/proto/trace/v1/trace.proto and common.proto, v1: stable).

Why not the exporter's own encoder: it builds a protobuf message object for every span, every
attribute and every value, and measured here that was most of a span's CPU, more than making
the span (docs/perf/observability.md). This writes the bytes straight from the span's fields:
same message, a fraction of the work. A batch with what this does not write (events, links: the
API's spans have none) goes to the exporter's encoder instead. tests/platform/test_otlp_encoding.py
decodes both encodings of the same spans with opentelemetry-proto and compares them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_fixed32 = struct.Struct("<I").pack

# Span.flags: the parent's is_remote is known (always), and whether it was remote.
HAS_IS_REMOTE = 0x100
IS_REMOTE = 0x200


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64: ten bytes of two's complement
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes, an embedded message)."""
    return tag + _varint(len(payload)) + payload


_strings: dict[str, bytes] = {}  # attribute keys and other repeated text, encoded once


def _text(tag: bytes, text: str) -> bytes:
    encoded = _strings.get(text)
    if encoded is None:
        encoded = text.encode()
        if len(_strings) < 10_000:
            _strings[text] = encoded
    return tag + _varint(len(encoded)) + encoded


def _any_value(value: Any) -> bytes:
    """An AnyValue message's bytes."""
    if value is None:
        return b""
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):  # ArrayValue { repeated AnyValue values = 1 }
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    raise TypeError(f"cannot encode an attribute of type {type(value).__name__}")


# (field tag, key, type, value) -> the field's bytes: most attributes repeat from span to
# span (the method, the route, the statement's text, the database's address). Emptied when
# full: the ones that never repeat (a request id) do not keep the others out for long. The type
# is in the key because 1, 1.0 and True are equal keys of a dict.
_key_values: dict[tuple[bytes, str, type, Any], bytes] = {}
KEY_VALUES_KEPT = 4096
_CACHEABLE = (str, int, float, bool)


def _key_value(tag: bytes, key: str, value: Any) -> bytes:
    """A KeyValue { string key = 1; AnyValue value = 2 } as field `tag`."""
    kind = type(value)
    if kind not in _CACHEABLE:
        return _field(tag, _text(b"\x0a", key) + _field(b"\x12", _any_value(value)))
    cache_key = (tag, key, kind, value)
    encoded = _key_values.get(cache_key)
    if encoded is None:
        encoded = _field(tag, _text(b"\x0a", key) + _field(b"\x12", _any_value(value)))
        if len(_key_values) >= KEY_VALUES_KEPT:
            _key_values.clear()
        _key_values[cache_key] = encoded
    return encoded


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """repeated KeyValue as field `tag`."""
    if not attributes:
        return b""
    return b"".join([_key_value(tag, key, value) for key, value in attributes.items()])


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    parent = span.parent
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_field(b"\x1a", context.trace_state.to_header().encode()))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_text(b"\x2a", span.name))
    parts.append(b"\x30" + bytes((span.kind.value + 1,)))  # the protocol counts from UNSPECIFIED
    parts.append(b"\x39" + _fixed64(span.start_time or 0))
    parts.append(b"\x41" + _fixed64(span.end_time or 0))
    parts.append(_attributes(b"\x4a", span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    status = span.status  # always there, as the exporter's encoder writes it
    message = _field(b"\x12", status.description.encode()) if status.description else b""
    parts.append(_field(b"\x7a", message + b"\x18" + _varint(status.status_code.value)))
    flags = HAS_IS_REMOTE | (IS_REMOTE if parent is not None and parent.is_remote else 0)
    parts.append(b"\x85\x01" + _fixed32(flags))
    return b"".join(parts)


def _resource(resource: Resource) -> bytes:
    return _attributes(b"\x0a", resource.attributes)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    parts = [_text(b"\x0a", scope.name)]
    if scope.version:
        parts.append(_text(b"\x12", scope.version))
    parts.append(_attributes(b"\x1a", scope.attributes))
    return b"".join(parts)


def encode_span_batch(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest's bytes: the spans grouped by resource, then by scope."""
    if any(span.events or span.links for span in spans):
        return _library_encoding(spans)
    try:
        return _encode(spans)
    except TypeError:  # an attribute value this does not write (a mapping)
        return _library_encoding(spans)


def _encode(spans: Sequence[ReadableSpan]) -> bytes:
    # Grouped by the objects' identity: a Resource's hash serializes its attributes as JSON
    # on every call. The SDK gives every span of a provider the same objects.
    resources: dict[int, Resource] = {}
    scopes: dict[tuple[int, int], InstrumentationScope | None] = {}
    grouped: dict[int, dict[tuple[int, int], list[bytes]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        resource_key = id(resource)
        scope_key = (resource_key, id(scope))
        resources[resource_key] = resource
        scopes[scope_key] = scope
        encoded = _span(span)
        grouped.setdefault(resource_key, {}).setdefault(scope_key, []).append(
            b"\x12" + _varint(len(encoded)) + encoded)
    resource_spans = []
    for resource_key, by_scope in grouped.items():
        scope_spans = []
        for scope_key, encoded_spans in by_scope.items():
            scope = scopes[scope_key]
            body = _field(b"\x0a", _scope(scope)) + b"".join(encoded_spans)
            if scope is not None and scope.schema_url:
                body += _field(b"\x1a", scope.schema_url.encode())
            scope_spans.append(_field(b"\x12", body))
        resource = resources[resource_key]
        body = _field(b"\x0a", _resource(resource)) + b"".join(scope_spans)
        if resource.schema_url:
            body += _field(b"\x1a", resource.schema_url.encode())
        resource_spans.append(_field(b"\x0a", body))
    return b"".join(resource_spans)


def _library_encoding(spans: Sequence[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializePartialToString())
