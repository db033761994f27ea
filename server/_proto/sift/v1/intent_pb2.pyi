from server._proto.sift.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifyIntentRequest(_message.Message):
    __slots__ = ("query", "top_k", "min_score")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    min_score: float
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., min_score: _Optional[float] = ...) -> None: ...

class Category(_message.Message):
    __slots__ = ("id", "path", "probability")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    probability: float
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ClassifyIntentResponse(_message.Message):
    __slots__ = ("categories", "source", "rule", "model_version")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedCompositeFieldContainer[Category]
    source: _common_pb2.AnswerSource
    rule: str
    model_version: str
    def __init__(self, categories: _Optional[_Iterable[_Union[Category, _Mapping]]] = ..., source: _Optional[_Union[_common_pb2.AnswerSource, str]] = ..., rule: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ClassifyIntentBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ClassifyIntentRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ClassifyIntentRequest, _Mapping]]] = ...) -> None: ...

class ClassifyIntentBatchResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ClassifyIntentResponse]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[ClassifyIntentResponse, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...
