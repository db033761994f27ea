from server._proto.sift.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Grade(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRADE_UNSPECIFIED: _ClassVar[Grade]
    GRADE_IRRELEVANT: _ClassVar[Grade]
    GRADE_PARTIAL: _ClassVar[Grade]
    GRADE_EXACT: _ClassVar[Grade]
GRADE_UNSPECIFIED: Grade
GRADE_IRRELEVANT: Grade
GRADE_PARTIAL: Grade
GRADE_EXACT: Grade

class Candidate(_message.Message):
    __slots__ = ("product_id", "title")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    title: str
    def __init__(self, product_id: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class ScoreRelevanceRequest(_message.Message):
    __slots__ = ("query", "candidates")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    query: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, query: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class Score(_message.Message):
    __slots__ = ("score", "grade", "source", "rule", "grade_name")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    GRADE_NAME_FIELD_NUMBER: _ClassVar[int]
    score: float
    grade: Grade
    source: _common_pb2.AnswerSource
    rule: str
    grade_name: str
    def __init__(self, score: _Optional[float] = ..., grade: _Optional[_Union[Grade, str]] = ..., source: _Optional[_Union[_common_pb2.AnswerSource, str]] = ..., rule: _Optional[str] = ..., grade_name: _Optional[str] = ...) -> None: ...

class ScoreRelevanceResponse(_message.Message):
    __slots__ = ("scores", "model_version")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[Score]
    model_version: str
    def __init__(self, scores: _Optional[_Iterable[_Union[Score, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...
