from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class AnswerSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER_SOURCE_UNSPECIFIED: _ClassVar[AnswerSource]
    ANSWER_SOURCE_MODEL: _ClassVar[AnswerSource]
    ANSWER_SOURCE_RULE: _ClassVar[AnswerSource]
ANSWER_SOURCE_UNSPECIFIED: AnswerSource
ANSWER_SOURCE_MODEL: AnswerSource
ANSWER_SOURCE_RULE: AnswerSource
