from orchestra.wire import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpoolState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPOOL_STATE_UNSPECIFIED: _ClassVar[SpoolState]
    SPOOL_STATE_ACCEPTED: _ClassVar[SpoolState]
    SPOOL_STATE_STARTED: _ClassVar[SpoolState]
    SPOOL_STATE_FINISHED: _ClassVar[SpoolState]

class Ending(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDING_UNSPECIFIED: _ClassVar[Ending]
    ENDING_OK: _ClassVar[Ending]
    ENDING_FAILED: _ClassVar[Ending]
    ENDING_TIMED_OUT: _ClassVar[Ending]
    ENDING_REFUSED: _ClassVar[Ending]
    ENDING_CANCELLED: _ClassVar[Ending]
    ENDING_LOST: _ClassVar[Ending]
    ENDING_EXPIRED: _ClassVar[Ending]

class OutputStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_STREAM_UNSPECIFIED: _ClassVar[OutputStream]
    OUTPUT_STREAM_STDOUT: _ClassVar[OutputStream]
    OUTPUT_STREAM_STDERR: _ClassVar[OutputStream]
SPOOL_STATE_UNSPECIFIED: SpoolState
SPOOL_STATE_ACCEPTED: SpoolState
SPOOL_STATE_STARTED: SpoolState
SPOOL_STATE_FINISHED: SpoolState
ENDING_UNSPECIFIED: Ending
ENDING_OK: Ending
ENDING_FAILED: Ending
ENDING_TIMED_OUT: Ending
ENDING_REFUSED: Ending
ENDING_CANCELLED: Ending
ENDING_LOST: Ending
ENDING_EXPIRED: Ending
OUTPUT_STREAM_UNSPECIFIED: OutputStream
OUTPUT_STREAM_STDOUT: OutputStream
OUTPUT_STREAM_STDERR: OutputStream

class SpoolEntry(_message.Message):
    __slots__ = ("task_id", "attempt", "state", "result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    state: SpoolState
    result: TaskResult
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., state: _Optional[_Union[SpoolState, str]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "software_version", "scores", "spool", "max_concurrent")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SPOOL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    software_version: str
    scores: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoreInfo]
    spool: _containers.RepeatedCompositeFieldContainer[SpoolEntry]
    max_concurrent: int
    def __init__(self, protocol_version: _Optional[int] = ..., software_version: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[_common_pb2.ScoreInfo, _Mapping]]] = ..., spool: _Optional[_Iterable[_Union[SpoolEntry, _Mapping]]] = ..., max_concurrent: _Optional[int] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "attempt", "ending", "outcome")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ENDING_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    ending: Ending
    outcome: _common_pb2.TaskOutcome
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., ending: _Optional[_Union[Ending, str]] = ..., outcome: _Optional[_Union[_common_pb2.TaskOutcome, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_at",)
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    sent_at: float
    def __init__(self, sent_at: _Optional[float] = ...) -> None: ...

class PlayerMessage(_message.Message):
    __slots__ = ("hello", "start_request", "result", "heartbeat", "inventory", "output")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    START_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    start_request: StartRequest
    result: TaskResult
    heartbeat: Heartbeat
    inventory: _common_pb2.Inventory
    output: OutputChunk
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., start_request: _Optional[_Union[StartRequest, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., inventory: _Optional[_Union[_common_pb2.Inventory, _Mapping]] = ..., output: _Optional[_Union[OutputChunk, _Mapping]] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("task_id", "attempt", "stream", "data", "skipped", "cut", "offset")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    stream: OutputStream
    data: bytes
    skipped: int
    cut: bool
    offset: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., stream: _Optional[_Union[OutputStream, str]] = ..., data: _Optional[bytes] = ..., skipped: _Optional[int] = ..., cut: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol_version", "conductor", "heartbeat_seconds")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONDUCTOR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    conductor: str
    heartbeat_seconds: int
    def __init__(self, protocol_version: _Optional[int] = ..., conductor: _Optional[str] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class RunTask(_message.Message):
    __slots__ = ("task_id", "attempt", "job_id", "score", "params", "requester", "deadline_at")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    job_id: str
    score: str
    params: _containers.ScalarMap[str, str]
    requester: str
    deadline_at: float
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., job_id: _Optional[str] = ..., score: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., requester: _Optional[str] = ..., deadline_at: _Optional[float] = ...) -> None: ...

class CancelTask(_message.Message):
    __slots__ = ("task_id", "attempt", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class StartGrant(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ConductorMessage(_message.Message):
    __slots__ = ("welcome", "run", "cancel", "ack", "heartbeat", "grant", "watch")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    run: RunTask
    cancel: CancelTask
    ack: ResultAck
    heartbeat: Heartbeat
    grant: StartGrant
    watch: WatchOutput
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., run: _Optional[_Union[RunTask, _Mapping]] = ..., cancel: _Optional[_Union[CancelTask, _Mapping]] = ..., ack: _Optional[_Union[ResultAck, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., grant: _Optional[_Union[StartGrant, _Mapping]] = ..., watch: _Optional[_Union[WatchOutput, _Mapping]] = ...) -> None: ...

class WatchOutput(_message.Message):
    __slots__ = ("task_id", "attempt", "on", "resume", "stdout_from", "stderr_from")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ON_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FROM_FIELD_NUMBER: _ClassVar[int]
    STDERR_FROM_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    on: bool
    resume: bool
    stdout_from: int
    stderr_from: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., on: _Optional[bool] = ..., resume: _Optional[bool] = ..., stdout_from: _Optional[int] = ..., stderr_from: _Optional[int] = ...) -> None: ...
