from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_DENSE: _ClassVar[SearchMode]
    SEARCH_MODE_LEXICAL: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_DENSE: SearchMode
SEARCH_MODE_LEXICAL: SearchMode
SEARCH_MODE_HYBRID: SearchMode

class QueryVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "vector", "k", "category", "mode")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    query: str
    vector: QueryVector
    k: int
    category: str
    mode: SearchMode
    def __init__(self, query: _Optional[str] = ..., vector: _Optional[_Union[QueryVector, _Mapping]] = ..., k: _Optional[int] = ..., category: _Optional[str] = ..., mode: _Optional[_Union[SearchMode, str]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("product_id", "score", "category")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    score: float
    category: str
    def __init__(self, product_id: _Optional[str] = ..., score: _Optional[float] = ..., category: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "model_version")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    model_version: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class EmbedQueryRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class EmbedQueryResponse(_message.Message):
    __slots__ = ("vector", "model_version")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class EmbedQueryBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EmbedQueryRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[EmbedQueryRequest, _Mapping]]] = ...) -> None: ...

class EmbedQueryBatchResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EmbedQueryResponse]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[EmbedQueryResponse, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...
