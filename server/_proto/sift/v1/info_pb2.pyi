from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Component(_message.Message):
    __slots__ = ("name", "file", "sha256", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    file: str
    sha256: str
    description: str
    def __init__(self, name: _Optional[str] = ..., file: _Optional[str] = ..., sha256: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("id", "path")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("bundle_version", "schema_version", "created_at", "code_version", "components", "labels", "embedding_dim", "num_products", "evaluation", "model_version", "search_modes", "search_default_mode", "grades")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    NUM_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MODES_FIELD_NUMBER: _ClassVar[int]
    SEARCH_DEFAULT_MODE_FIELD_NUMBER: _ClassVar[int]
    GRADES_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    schema_version: int
    created_at: str
    code_version: str
    components: _containers.RepeatedCompositeFieldContainer[Component]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    embedding_dim: int
    num_products: int
    evaluation: _struct_pb2.Struct
    model_version: str
    search_modes: _containers.RepeatedScalarFieldContainer[str]
    search_default_mode: str
    grades: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundle_version: _Optional[str] = ..., schema_version: _Optional[int] = ..., created_at: _Optional[str] = ..., code_version: _Optional[str] = ..., components: _Optional[_Iterable[_Union[Component, _Mapping]]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., embedding_dim: _Optional[int] = ..., num_products: _Optional[int] = ..., evaluation: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., model_version: _Optional[str] = ..., search_modes: _Optional[_Iterable[str]] = ..., search_default_mode: _Optional[str] = ..., grades: _Optional[_Iterable[str]] = ...) -> None: ...
