"""The OpenAPI document of the HTTP transport is valid OpenAPI 3.1 and describes each call from its proto."""

from __future__ import annotations

from openapi_spec_validator import validate

from server.app import SERVICES
from server.transport.openapi import openapi_document

DESCRIPTORS = [s.pb2.DESCRIPTOR.services_by_name[s.name] for s in SERVICES]


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document(DESCRIPTORS, "sift.v1"))


def test_each_method_is_a_post_of_its_request_answering_its_response() -> None:
    document = openapi_document(DESCRIPTORS, "sift.v1")
    for service in DESCRIPTORS:
        for method in service.methods:
            post = document["paths"][f"/{service.full_name}/{method.name}"]["post"]
            body = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            answer = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            assert body.endswith(method.input_type.full_name) and answer.endswith(
                method.output_type.full_name
            )


def test_fields_follow_the_proto_json_mapping() -> None:
    schemas = openapi_document(DESCRIPTORS, "sift.v1")["components"]["schemas"]
    relevance = schemas["sift.v1.ScoreRelevanceRequest"]["properties"]
    assert relevance["candidates"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/sift.v1.Candidate"},
    }
    info = schemas["sift.v1.GetModelInfoResponse"]["properties"]
    assert info["evaluation"] == {"type": "object", "additionalProperties": True}  # a google.protobuf.Struct
    assert schemas["sift.v1.SearchResponse"]["additionalProperties"] is False
