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
    __slots__ = ("score", "scope", "targets", "params", "expires_seconds", "idempotency_key", "name", "labels", "priority", "rollout")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
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
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    score: str
    scope: Scope
    targets: _containers.RepeatedScalarFieldContainer[str]
    params: _containers.ScalarMap[str, str]
    expires_seconds: int
    idempotency_key: str
    name: str
    labels: _containers.ScalarMap[str, str]
    priority: int
    rollout: RolloutRequest
    def __init__(self, score: _Optional[str] = ..., scope: _Optional[_Union[Scope, str]] = ..., targets: _Optional[_Iterable[str]] = ..., params: _Optional[_Mapping[str, str]] = ..., expires_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., rollout: _Optional[_Union[RolloutRequest, _Mapping]] = ...) -> None: ...

class RolloutRequest(_message.Message):
    __slots__ = ("canary", "batch", "max_failures")
    CANARY_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    canary: int
    batch: str
    max_failures: str
    def __init__(self, canary: _Optional[int] = ..., batch: _Optional[str] = ..., max_failures: _Optional[str] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("canary", "batch", "has_max_failures", "max_failures", "phase", "phase_reason", "failures")
    CANARY_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    HAS_MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    canary: int
    batch: int
    has_max_failures: bool
    max_failures: int
    phase: str
    phase_reason: str
    failures: int
    def __init__(self, canary: _Optional[int] = ..., batch: _Optional[int] = ..., has_max_failures: _Optional[bool] = ..., max_failures: _Optional[int] = ..., phase: _Optional[str] = ..., phase_reason: _Optional[str] = ..., failures: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("attempt", "player", "state", "outcome")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PLAYER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    player: str
    state: _common_pb2.TaskState
    outcome: _common_pb2.TaskOutcome
    def __init__(self, attempt: _Optional[int] = ..., player: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., outcome: _Optional[_Union[_common_pb2.TaskOutcome, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("task_id", "player", "state", "attempt", "dispatched_at", "outcome", "retries", "not_before", "history")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    player: str
    state: _common_pb2.TaskState
    attempt: int
    dispatched_at: float
    outcome: _common_pb2.TaskOutcome
    retries: int
    not_before: float
    history: _containers.RepeatedCompositeFieldContainer[Attempt]
    def __init__(self, task_id: _Optional[str] = ..., player: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., attempt: _Optional[int] = ..., dispatched_at: _Optional[float] = ..., outcome: _Optional[_Union[_common_pb2.TaskOutcome, _Mapping]] = ..., retries: _Optional[int] = ..., not_before: _Optional[float] = ..., history: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "score", "scope", "targets", "params", "requester", "created_at", "deadline_at", "finished_at", "status", "finished", "tasks", "name", "labels", "priority", "rollout", "retries", "retry_delay", "concurrency", "exclusive", "workflow_id", "step")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
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
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
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
    name: str
    labels: _containers.ScalarMap[str, str]
    priority: int
    rollout: Rollout
    retries: int
    retry_delay: float
    concurrency: int
    exclusive: bool
    workflow_id: str
    step: str
    def __init__(self, job_id: _Optional[str] = ..., score: _Optional[str] = ..., scope: _Optional[_Union[Scope, str]] = ..., targets: _Optional[_Iterable[str]] = ..., params: _Optional[_Mapping[str, str]] = ..., requester: _Optional[str] = ..., created_at: _Optional[float] = ..., deadline_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., status: _Optional[str] = ..., finished: _Optional[bool] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ..., retries: _Optional[int] = ..., retry_delay: _Optional[float] = ..., concurrency: _Optional[int] = ..., exclusive: _Optional[bool] = ..., workflow_id: _Optional[str] = ..., step: _Optional[str] = ...) -> None: ...

class RetryRequest(_message.Message):
    __slots__ = ("job_id", "states")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.TaskState]
    def __init__(self, job_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_common_pb2.TaskState, str]]] = ...) -> None: ...

class RetryReply(_message.Message):
    __slots__ = ("job", "task_ids")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteReply(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("names", "undrain", "reason")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    UNDRAIN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    undrain: bool
    reason: str
    def __init__(self, names: _Optional[_Iterable[str]] = ..., undrain: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class DrainReply(_message.Message):
    __slots__ = ("names", "hosts")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPlayersRequest(_message.Message):
    __slots__ = ("targets",)
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, targets: _Optional[_Iterable[str]] = ...) -> None: ...

class PlayerInfo(_message.Message):
    __slots__ = ("name", "connected", "connected_since", "last_seen", "running", "max_concurrent", "scores", "cert_not_after", "revoked", "drained", "drained_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    DRAINED_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    connected_since: float
    last_seen: float
    running: int
    max_concurrent: int
    scores: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoreInfo]
    cert_not_after: float
    revoked: str
    drained: str
    drained_reason: str
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., connected_since: _Optional[float] = ..., last_seen: _Optional[float] = ..., running: _Optional[int] = ..., max_concurrent: _Optional[int] = ..., scores: _Optional[_Iterable[_Union[_common_pb2.ScoreInfo, _Mapping]]] = ..., cert_not_after: _Optional[float] = ..., revoked: _Optional[str] = ..., drained: _Optional[str] = ..., drained_reason: _Optional[str] = ...) -> None: ...

class PlayerList(_message.Message):
    __slots__ = ("players", "conductor_cert_not_after", "conductor_state")
    PLAYERS_FIELD_NUMBER: _ClassVar[int]
    CONDUCTOR_CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    CONDUCTOR_STATE_FIELD_NUMBER: _ClassVar[int]
    players: _containers.RepeatedCompositeFieldContainer[PlayerInfo]
    conductor_cert_not_after: float
    conductor_state: str
    def __init__(self, players: _Optional[_Iterable[_Union[PlayerInfo, _Mapping]]] = ..., conductor_cert_not_after: _Optional[float] = ..., conductor_state: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("statuses", "score", "requester", "target", "since", "limit", "mine", "name", "labels")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MINE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[str]
    score: str
    requester: str
    target: str
    since: float
    limit: int
    mine: bool
    name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, statuses: _Optional[_Iterable[str]] = ..., score: _Optional[str] = ..., requester: _Optional[str] = ..., target: _Optional[str] = ..., since: _Optional[float] = ..., limit: _Optional[int] = ..., mine: _Optional[bool] = ..., name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskCount(_message.Message):
    __slots__ = ("state", "count")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.TaskState
    count: int
    def __init__(self, state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., count: _Optional[int] = ...) -> None: ...

class JobSummary(_message.Message):
    __slots__ = ("job_id", "score", "scope", "target_count", "targets", "requester", "created_at", "finished_at", "status", "counts", "name", "labels", "priority", "phase", "workflow_id", "step")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_COUNT_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    score: str
    scope: Scope
    target_count: int
    targets: _containers.RepeatedScalarFieldContainer[str]
    requester: str
    created_at: float
    finished_at: float
    status: str
    counts: _containers.RepeatedCompositeFieldContainer[TaskCount]
    name: str
    labels: _containers.ScalarMap[str, str]
    priority: int
    phase: str
    workflow_id: str
    step: str
    def __init__(self, job_id: _Optional[str] = ..., score: _Optional[str] = ..., scope: _Optional[_Union[Scope, str]] = ..., target_count: _Optional[int] = ..., targets: _Optional[_Iterable[str]] = ..., requester: _Optional[str] = ..., created_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., status: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[TaskCount, _Mapping]]] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., phase: _Optional[str] = ..., workflow_id: _Optional[str] = ..., step: _Optional[str] = ...) -> None: ...

class JobList(_message.Message):
    __slots__ = ("jobs", "more")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobSummary]
    more: bool
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobSummary, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class PendingTask(_message.Message):
    __slots__ = ("player", "state", "since")
    PLAYER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    player: str
    state: _common_pb2.TaskState
    since: float
    def __init__(self, player: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., since: _Optional[float] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("job_id", "total", "counts", "slowest", "created_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SLOWEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    total: int
    counts: _containers.RepeatedCompositeFieldContainer[TaskCount]
    slowest: _containers.RepeatedCompositeFieldContainer[PendingTask]
    created_at: float
    def __init__(self, job_id: _Optional[str] = ..., total: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[TaskCount, _Mapping]]] = ..., slowest: _Optional[_Iterable[_Union[PendingTask, _Mapping]]] = ..., created_at: _Optional[float] = ...) -> None: ...

class JobUpdate(_message.Message):
    __slots__ = ("progress", "job")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    progress: JobProgress
    job: Job
    def __init__(self, progress: _Optional[_Union[JobProgress, _Mapping]] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WorkflowStep(_message.Message):
    __slots__ = ("name", "after", "on_failure", "job")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    name: str
    after: _containers.RepeatedScalarFieldContainer[str]
    on_failure: str
    job: SubmitRequest
    def __init__(self, name: _Optional[str] = ..., after: _Optional[_Iterable[str]] = ..., on_failure: _Optional[str] = ..., job: _Optional[_Union[SubmitRequest, _Mapping]] = ...) -> None: ...

class WorkflowRequest(_message.Message):
    __slots__ = ("name", "labels", "params", "steps", "idempotency_key")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    params: _containers.ScalarMap[str, str]
    steps: _containers.RepeatedCompositeFieldContainer[WorkflowStep]
    idempotency_key: str
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., params: _Optional[_Mapping[str, str]] = ..., steps: _Optional[_Iterable[_Union[WorkflowStep, _Mapping]]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class WorkflowReply(_message.Message):
    __slots__ = ("workflow_id", "existing")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    existing: bool
    def __init__(self, workflow_id: _Optional[str] = ..., existing: _Optional[bool] = ...) -> None: ...

class WorkflowStepStatus(_message.Message):
    __slots__ = ("name", "state", "reason", "job_id", "after", "on_failure", "score", "started_at", "finished_at", "counts", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    reason: str
    job_id: str
    after: _containers.RepeatedScalarFieldContainer[str]
    on_failure: str
    score: str
    started_at: float
    finished_at: float
    counts: _containers.RepeatedCompositeFieldContainer[TaskCount]
    params: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., job_id: _Optional[str] = ..., after: _Optional[_Iterable[str]] = ..., on_failure: _Optional[str] = ..., score: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., counts: _Optional[_Iterable[_Union[TaskCount, _Mapping]]] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("workflow_id", "name", "labels", "requester", "created_at", "finished_at", "status", "finished", "steps", "reason")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    name: str
    labels: _containers.ScalarMap[str, str]
    requester: str
    created_at: float
    finished_at: float
    status: str
    finished: bool
    steps: _containers.RepeatedCompositeFieldContainer[WorkflowStepStatus]
    reason: str
    def __init__(self, workflow_id: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., requester: _Optional[str] = ..., created_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., status: _Optional[str] = ..., finished: _Optional[bool] = ..., steps: _Optional[_Iterable[_Union[WorkflowStepStatus, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class ScheduleRequest(_message.Message):
    __slots__ = ("name", "cron", "missed", "overlap", "job", "workflow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    cron: str
    missed: str
    overlap: bool
    job: SubmitRequest
    workflow: WorkflowRequest
    def __init__(self, name: _Optional[str] = ..., cron: _Optional[str] = ..., missed: _Optional[str] = ..., overlap: _Optional[bool] = ..., job: _Optional[_Union[SubmitRequest, _Mapping]] = ..., workflow: _Optional[_Union[WorkflowRequest, _Mapping]] = ...) -> None: ...

class ScheduleChange(_message.Message):
    __slots__ = ("name", "action")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    action: str
    def __init__(self, name: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class ScheduleInfo(_message.Message):
    __slots__ = ("name", "owner", "cron", "missed", "overlap", "paused", "kind", "what", "created_at", "next_at", "last_at", "last_id", "last_status", "last_error", "removed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner: str
    cron: str
    missed: str
    overlap: bool
    paused: bool
    kind: str
    what: str
    created_at: float
    next_at: float
    last_at: float
    last_id: str
    last_status: str
    last_error: str
    removed: bool
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., cron: _Optional[str] = ..., missed: _Optional[str] = ..., overlap: _Optional[bool] = ..., paused: _Optional[bool] = ..., kind: _Optional[str] = ..., what: _Optional[str] = ..., created_at: _Optional[float] = ..., next_at: _Optional[float] = ..., last_at: _Optional[float] = ..., last_id: _Optional[str] = ..., last_status: _Optional[str] = ..., last_error: _Optional[str] = ..., removed: _Optional[bool] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScheduleList(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[ScheduleInfo]
    def __init__(self, schedules: _Optional[_Iterable[_Union[ScheduleInfo, _Mapping]]] = ...) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("job_id", "host", "timeout_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    host: str
    timeout_seconds: float
    def __init__(self, job_id: _Optional[str] = ..., host: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class OutputPiece(_message.Message):
    __slots__ = ("host", "stream", "data", "skipped", "cut")
    HOST_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    host: str
    stream: str
    data: bytes
    skipped: int
    cut: bool
    def __init__(self, host: _Optional[str] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., skipped: _Optional[int] = ..., cut: _Optional[bool] = ...) -> None: ...

class TaskMoved(_message.Message):
    __slots__ = ("host", "state")
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    host: str
    state: str
    def __init__(self, host: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class FollowEvent(_message.Message):
    __slots__ = ("output", "task", "job")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    output: OutputPiece
    task: TaskMoved
    job: Job
    def __init__(self, output: _Optional[_Union[OutputPiece, _Mapping]] = ..., task: _Optional[_Union[TaskMoved, _Mapping]] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...
