"""Decodes OTLP/HTTP protobuf trace exports with python3-protobuf (Debian).

The message types are described here with descriptor_pb2 (no protoc, no
.proto file to fetch): ExportTraceServiceRequest and what it contains, with
the field numbers and types of opentelemetry/proto/collector/trace/v1,
trace/v1, common/v1 and resource/v1. SpanKind and StatusCode are declared
int32 (the same varint on the wire) so a decoded span has integers, as in
OTLP/JSON.

decode_export(body) returns the OTLP/JSON shape of the request (the shape
Portico's http/json exporter writes): camelCase keys, trace and span ids as
lowercase hex, 64-bit numbers as decimal strings, and "status" present
(possibly {}), so tests read spans the same way whatever the encoding.
"""

import base64

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_MESSAGES = {
    # name: [(field name, number, type, label, message type)]
    "AnyValue": [("string_value", 1, _F.TYPE_STRING, None, None),
                 ("bool_value", 2, _F.TYPE_BOOL, None, None),
                 ("int_value", 3, _F.TYPE_INT64, None, None),
                 ("double_value", 4, _F.TYPE_DOUBLE, None, None),
                 ("bytes_value", 7, _F.TYPE_BYTES, None, None)],
    "KeyValue": [("key", 1, _F.TYPE_STRING, None, None),
                 ("value", 2, _F.TYPE_MESSAGE, None, "AnyValue")],
    "Resource": [("attributes", 1, _F.TYPE_MESSAGE, "repeated", "KeyValue"),
                 ("dropped_attributes_count", 2, _F.TYPE_UINT32, None, None)],
    "InstrumentationScope": [("name", 1, _F.TYPE_STRING, None, None),
                             ("version", 2, _F.TYPE_STRING, None, None)],
    "Status": [("message", 2, _F.TYPE_STRING, None, None),
               ("code", 3, _F.TYPE_INT32, None, None)],
    "Span": [("trace_id", 1, _F.TYPE_BYTES, None, None),
             ("span_id", 2, _F.TYPE_BYTES, None, None),
             ("trace_state", 3, _F.TYPE_STRING, None, None),
             ("parent_span_id", 4, _F.TYPE_BYTES, None, None),
             ("name", 5, _F.TYPE_STRING, None, None),
             ("kind", 6, _F.TYPE_INT32, None, None),
             ("start_time_unix_nano", 7, _F.TYPE_FIXED64, None, None),
             ("end_time_unix_nano", 8, _F.TYPE_FIXED64, None, None),
             ("attributes", 9, _F.TYPE_MESSAGE, "repeated", "KeyValue"),
             ("dropped_attributes_count", 10, _F.TYPE_UINT32, None, None),
             ("status", 15, _F.TYPE_MESSAGE, None, "Status"),
             ("flags", 16, _F.TYPE_FIXED32, None, None)],
    "ScopeSpans": [("scope", 1, _F.TYPE_MESSAGE, None, "InstrumentationScope"),
                   ("spans", 2, _F.TYPE_MESSAGE, "repeated", "Span"),
                   ("schema_url", 3, _F.TYPE_STRING, None, None)],
    "ResourceSpans": [("resource", 1, _F.TYPE_MESSAGE, None, "Resource"),
                      ("scope_spans", 2, _F.TYPE_MESSAGE, "repeated", "ScopeSpans"),
                      ("schema_url", 3, _F.TYPE_STRING, None, None)],
    "ExportTraceServiceRequest": [("resource_spans", 1, _F.TYPE_MESSAGE, "repeated", "ResourceSpans")],
}
_PACKAGE = "portico.test.otlp"


def _build():
    fd = descriptor_pb2.FileDescriptorProto(name="portico_test_otlp.proto", package=_PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        m = fd.message_type.add(name=name)
        for fname, num, ftype, label, mtype in fields:
            f = m.field.add(name=fname, number=num, type=ftype,
                            label=_F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL)
            if mtype:
                f.type_name = ".%s.%s" % (_PACKAGE, mtype)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName(_PACKAGE + ".ExportTraceServiceRequest")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


ExportTraceServiceRequest = _build()


def _hex(b64):
    return base64.b64decode(b64).hex()


def decode_export(body):
    """The OTLP/JSON shape of a protobuf ExportTraceServiceRequest; raises
    google.protobuf.message.DecodeError on bytes that do not parse."""
    msg = ExportTraceServiceRequest()
    msg.ParseFromString(body)
    d = json_format.MessageToDict(msg)  # camelCase, bytes base64, 64-bit ints as strings
    for rs in d.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in s:
                        s[k] = _hex(s[k])
                s.setdefault("status", {})
                s.setdefault("attributes", [])
    return d
