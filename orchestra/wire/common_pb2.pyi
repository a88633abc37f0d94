from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_DISPATCHED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_OK: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_TIMED_OUT: _ClassVar[TaskState]
    TASK_STATE_REFUSED: _ClassVar[TaskState]
    TASK_STATE_EXPIRED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
    TASK_STATE_REMOVED: _ClassVar[TaskState]
    TASK_STATE_LOST: _ClassVar[TaskState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_DISPATCHED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_OK: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_TIMED_OUT: TaskState
TASK_STATE_REFUSED: TaskState
TASK_STATE_EXPIRED: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_REMOVED: TaskState
TASK_STATE_LOST: TaskState

class ParamDecl(_message.Message):
    __slots__ = ("name", "required", "pattern", "choices", "default", "has_default", "secret")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    HAS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    name: str
    required: bool
    pattern: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    default: str
    has_default: bool
    secret: bool
    def __init__(self, name: _Optional[str] = ..., required: _Optional[bool] = ..., pattern: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ..., default: _Optional[str] = ..., has_default: _Optional[bool] = ..., secret: _Optional[bool] = ...) -> None: ...

class ScoreInfo(_message.Message):
    __slots__ = ("name", "interface", "timeout_seconds", "params", "valid", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    interface: str
    timeout_seconds: int
    params: _containers.RepeatedCompositeFieldContainer[ParamDecl]
    valid: bool
    error: str
    def __init__(self, name: _Optional[str] = ..., interface: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., params: _Optional[_Iterable[_Union[ParamDecl, _Mapping]]] = ..., valid: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...
