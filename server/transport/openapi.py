"""The OpenAPI 3.1 document of the HTTP/JSON transport, derived from the same proto descriptors the routes
are built from (transport/http.py), so it cannot describe a call the server does not serve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor

HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"

_T = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _T.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # The proto JSON mapping writes 64-bit integers as strings (and reads either).
    _T.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    _T.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    _T.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    _T.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    _T.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
}
# Well-known types have their own JSON forms.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string"},
}
ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "the gRPC status name, e.g. INVALID_ARGUMENT"},
        "message": {"type": "string", "description": "the gRPC status message; it starts with the field"},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == _T.TYPE_MESSAGE:
        entry = field.message_type
        if entry.GetOptions().map_entry:
            value = entry.fields_by_name["value"]
            return {"type": "object", "additionalProperties": _field_schema(value, schemas)}
        one = _message_schema(entry, schemas)
    elif field.type == _T.TYPE_ENUM:
        one = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        schemas.setdefault(field.enum_type.full_name, one)
        one = _ref(field.enum_type.full_name)
    else:
        one = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": one}
    return one


def _message_schema(message: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    """A $ref to the message's schema, adding it (and the messages it holds) to `schemas`."""
    name = message.full_name
    if name in _WELL_KNOWN:
        return _WELL_KNOWN[name]
    if name not in schemas:
        schemas[name] = {}  # placed first: a message that holds itself refers to this entry
        properties = {}
        for field in message.fields:
            schema = _field_schema(field, schemas)
            oneof = field.containing_oneof
            if oneof is not None and len(oneof.fields) > 1:  # one field alone: proto3 `optional`
                others = [f.name for f in oneof.fields if f is not field]
                schema = {**schema, "description": f"one of `{oneof.name}`: set it or {others}, not both"}
            properties[field.name] = schema
        schemas[name] = {
            "type": "object",
            "description": "Field names as in the .proto; their lowerCamelCase JSON names are accepted too.",
            "properties": properties,
            "additionalProperties": False,
        }
    return _ref(name)


def openapi_document(services: Sequence[ServiceDescriptor], version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR}
    error = {
        "description": "the call's gRPC status",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    paths: dict[str, Any] = {}
    for service in services:
        for method in service.methods:
            paths[f"/{service.full_name}/{method.name}"] = {
                "post": {
                    "operationId": f"{service.name}.{method.name}",
                    "tags": [service.full_name],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _message_schema(method.input_type, schemas)}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": method.output_type.name,
                            "content": {
                                "application/json": {"schema": _message_schema(method.output_type, schemas)}
                            },
                        },
                        "default": error,
                    },
                }
            }
    status = {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]}},
    }
    service_param = {"name": "service", "in": "query", "required": False, "schema": {"type": "string"}}
    paths["/health"] = {
        "get": {
            "operationId": "health",
            "parameters": [service_param],
            "responses": {
                "200": {"description": "SERVING", "content": {"application/json": {"schema": status}}},
                "503": {"description": "NOT_SERVING", "content": {"application/json": {"schema": status}}},
                "default": error,
            },
        }
    }
    paths[HEALTH_CHECK_PATH] = {
        "post": {
            "operationId": "Health.Check",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": {"service": {"type": "string"}}}
                    }
                }
            },
            "responses": {
                "200": {"description": "the status", "content": {"application/json": {"schema": status}}},
                "default": error,
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sift", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"apiKey": []}],
    }
