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
    TASK_STATE_CANCELLING: _ClassVar[TaskState]
    TASK_STATE_SKIPPED: _ClassVar[TaskState]
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
TASK_STATE_CANCELLING: TaskState
TASK_STATE_SKIPPED: TaskState

class TaskOutcome(_message.Message):
    __slots__ = ("has_exit_code", "exit_code", "signal", "response", "stdout_tail", "stderr_tail", "stdout_truncated", "stderr_truncated", "response_truncated", "reason", "started_at", "finished_at")
    class ResponseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_TAIL_FIELD_NUMBER: _ClassVar[int]
    STDERR_TAIL_FIELD_NUMBER: _ClassVar[int]
    STDOUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STDERR_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    has_exit_code: bool
    exit_code: int
    signal: int
    response: _containers.ScalarMap[str, str]
    stdout_tail: bytes
    stderr_tail: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    response_truncated: bool
    reason: str
    started_at: float
    finished_at: float
    def __init__(self, has_exit_code: _Optional[bool] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., response: _Optional[_Mapping[str, str]] = ..., stdout_tail: _Optional[bytes] = ..., stderr_tail: _Optional[bytes] = ..., stdout_truncated: _Optional[bool] = ..., stderr_truncated: _Optional[bool] = ..., response_truncated: _Optional[bool] = ..., reason: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("name", "interface", "timeout_seconds", "params", "valid", "error", "retries", "retry_delay", "concurrency", "exclusive")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    interface: str
    timeout_seconds: int
    params: _containers.RepeatedCompositeFieldContainer[ParamDecl]
    valid: bool
    error: str
    retries: int
    retry_delay: float
    concurrency: int
    exclusive: bool
    def __init__(self, name: _Optional[str] = ..., interface: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., params: _Optional[_Iterable[_Union[ParamDecl, _Mapping]]] = ..., valid: _Optional[bool] = ..., error: _Optional[str] = ..., retries: _Optional[int] = ..., retry_delay: _Optional[float] = ..., concurrency: _Optional[int] = ..., exclusive: _Optional[bool] = ...) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ScoreInfo]
    def __init__(self, scores: _Optional[_Iterable[_Union[ScoreInfo, _Mapping]]] = ...) -> None: ...
