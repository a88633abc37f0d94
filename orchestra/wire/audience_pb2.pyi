from orchestra.wire import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_UNSPECIFIED: _ClassVar[Scope]
    SCOPE_ALL_OF: _ClassVar[Scope]
    SCOPE_ONE_OF: _ClassVar[Scope]
SCOPE_UNSPECIFIED: Scope
SCOPE_ALL_OF: Scope
SCOPE_ONE_OF: Scope

class SubmitRequest(_message.Message):
    __slots__ = ("score", "scope", "targets", "params", "expires_seconds", "idempotency_key")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    score: str
    scope: Scope
    targets: _containers.RepeatedScalarFieldContainer[str]
    params: _containers.ScalarMap[str, str]
    expires_seconds: int
    idempotency_key: str
    def __init__(self, score: _Optional[str] = ..., scope: _Optional[_Union[Scope, str]] = ..., targets: _Optional[_Iterable[str]] = ..., params: _Optional[_Mapping[str, str]] = ..., expires_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("job_id", "existing")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    existing: bool
    def __init__(self, job_id: _Optional[str] = ..., existing: _Optional[bool] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("job_id", "timeout_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    timeout_seconds: float
    def __init__(self, job_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "player", "state", "attempt", "dispatched_at", "outcome")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    player: str
    state: _common_pb2.TaskState
    attempt: int
    dispatched_at: float
    outcome: _common_pb2.TaskOutcome
    def __init__(self, task_id: _Optional[str] = ..., player: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., attempt: _Optional[int] = ..., dispatched_at: _Optional[float] = ..., outcome: _Optional[_Union[_common_pb2.TaskOutcome, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "score", "scope", "targets", "params", "requester", "created_at", "deadline_at", "finished_at", "status", "finished", "tasks")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    score: str
    scope: Scope
    targets: _containers.RepeatedScalarFieldContainer[str]
    params: _containers.ScalarMap[str, str]
    requester: str
    created_at: float
    deadline_at: float
    finished_at: float
    status: str
    finished: bool
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, job_id: _Optional[str] = ..., score: _Optional[str] = ..., scope: _Optional[_Union[Scope, str]] = ..., targets: _Optional[_Iterable[str]] = ..., params: _Optional[_Mapping[str, str]] = ..., requester: _Optional[str] = ..., created_at: _Optional[float] = ..., deadline_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., status: _Optional[str] = ..., finished: _Optional[bool] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class ListPlayersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlayerInfo(_message.Message):
    __slots__ = ("name", "connected", "connected_since", "last_seen", "running", "max_concurrent", "scores", "cert_not_after", "revoked")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    connected_since: float
    last_seen: float
    running: int
    max_concurrent: int
    scores: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoreInfo]
    cert_not_after: float
    revoked: str
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., connected_since: _Optional[float] = ..., last_seen: _Optional[float] = ..., running: _Optional[int] = ..., max_concurrent: _Optional[int] = ..., scores: _Optional[_Iterable[_Union[_common_pb2.ScoreInfo, _Mapping]]] = ..., cert_not_after: _Optional[float] = ..., revoked: _Optional[str] = ...) -> None: ...

class PlayerList(_message.Message):
    __slots__ = ("players", "conductor_cert_not_after")
    PLAYERS_FIELD_NUMBER: _ClassVar[int]
    CONDUCTOR_CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    players: _containers.RepeatedCompositeFieldContainer[PlayerInfo]
    conductor_cert_not_after: float
    def __init__(self, players: _Optional[_Iterable[_Union[PlayerInfo, _Mapping]]] = ..., conductor_cert_not_after: _Optional[float] = ...) -> None: ...
