from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_BUILTIN: _ClassVar[JobKind]
    JOB_KIND_COMMAND: _ClassVar[JobKind]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_BUILTIN: JobKind
JOB_KIND_COMMAND: JobKind

class DataOptions(_message.Message):
    __slots__ = ("train_limit", "test_limit", "augment", "width_multiplier", "bn_group")
    TRAIN_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TEST_LIMIT_FIELD_NUMBER: _ClassVar[int]
    AUGMENT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    BN_GROUP_FIELD_NUMBER: _ClassVar[int]
    train_limit: int
    test_limit: int
    augment: bool
    width_multiplier: float
    bn_group: int
    def __init__(self, train_limit: _Optional[int] = ..., test_limit: _Optional[int] = ..., augment: bool = ..., width_multiplier: _Optional[float] = ..., bn_group: _Optional[int] = ...) -> None: ...

class SweepSpec(_message.Message):
    __slots__ = ("name", "variants", "seeds", "epochs", "batch_size", "learning_rates", "data", "max_attempts", "seed_offsets", "command", "objective")
    class LearningRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SeedOffsetsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    variants: _containers.RepeatedScalarFieldContainer[str]
    seeds: _containers.RepeatedScalarFieldContainer[int]
    epochs: int
    batch_size: int
    learning_rates: _containers.ScalarMap[str, float]
    data: DataOptions
    max_attempts: int
    seed_offsets: _containers.ScalarMap[str, int]
    command: CommandSpec
    objective: Objective
    def __init__(self, name: _Optional[str] = ..., variants: _Optional[_Iterable[str]] = ..., seeds: _Optional[_Iterable[int]] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rates: _Optional[_Mapping[str, float]] = ..., data: _Optional[_Union[DataOptions, _Mapping]] = ..., max_attempts: _Optional[int] = ..., seed_offsets: _Optional[_Mapping[str, int]] = ..., command: _Optional[_Union[CommandSpec, _Mapping]] = ..., objective: _Optional[_Union[Objective, _Mapping]] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("metric", "mode")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[Objective.Mode]
        MODE_MAX: _ClassVar[Objective.Mode]
        MODE_MIN: _ClassVar[Objective.Mode]
    MODE_UNSPECIFIED: Objective.Mode
    MODE_MAX: Objective.Mode
    MODE_MIN: Objective.Mode
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    mode: Objective.Mode
    def __init__(self, metric: _Optional[str] = ..., mode: _Optional[_Union[Objective.Mode, str]] = ...) -> None: ...

class CommandSpec(_message.Message):
    __slots__ = ("template", "grid", "samples", "distributions", "workdir", "env", "timeout_seconds")
    class GridEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValues, _Mapping]] = ...) -> None: ...
    class DistributionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Distribution
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Distribution, _Mapping]] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    template: str
    grid: _containers.MessageMap[str, ParamValues]
    samples: int
    distributions: _containers.MessageMap[str, Distribution]
    workdir: str
    env: _containers.ScalarMap[str, str]
    timeout_seconds: int
    def __init__(self, template: _Optional[str] = ..., grid: _Optional[_Mapping[str, ParamValues]] = ..., samples: _Optional[int] = ..., distributions: _Optional[_Mapping[str, Distribution]] = ..., workdir: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ParamValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class Distribution(_message.Message):
    __slots__ = ("uniform", "log_uniform", "int_uniform", "choice")
    UNIFORM_FIELD_NUMBER: _ClassVar[int]
    LOG_UNIFORM_FIELD_NUMBER: _ClassVar[int]
    INT_UNIFORM_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    uniform: Range
    log_uniform: Range
    int_uniform: Range
    choice: ParamValues
    def __init__(self, uniform: _Optional[_Union[Range, _Mapping]] = ..., log_uniform: _Optional[_Union[Range, _Mapping]] = ..., int_uniform: _Optional[_Union[Range, _Mapping]] = ..., choice: _Optional[_Union[ParamValues, _Mapping]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "wall_seconds", "images_per_sec", "attempt", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ACC_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACC_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    wall_seconds: float
    images_per_sec: float
    attempt: int
    values: _containers.ScalarMap[str, float]
    def __init__(self, epoch: _Optional[int] = ..., train_loss: _Optional[float] = ..., train_acc: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_acc: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., images_per_sec: _Optional[float] = ..., attempt: _Optional[int] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "sweep", "variant", "seed", "state", "attempt", "max_attempts", "epochs", "epochs_done", "learning_rate", "best_value", "best_epoch", "worker_id", "last_error", "created_at_ms", "started_at_ms", "finished_at_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_DONE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    sweep: str
    variant: str
    seed: int
    state: JobState
    attempt: int
    max_attempts: int
    epochs: int
    epochs_done: int
    learning_rate: float
    best_value: float
    best_epoch: int
    worker_id: str
    last_error: str
    created_at_ms: int
    started_at_ms: int
    finished_at_ms: int
    def __init__(self, id: _Optional[int] = ..., sweep: _Optional[str] = ..., variant: _Optional[str] = ..., seed: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., epochs: _Optional[int] = ..., epochs_done: _Optional[int] = ..., learning_rate: _Optional[float] = ..., best_value: _Optional[float] = ..., best_epoch: _Optional[int] = ..., worker_id: _Optional[str] = ..., last_error: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ...) -> None: ...

class SweepSummary(_message.Message):
    __slots__ = ("spec", "created_at_ms", "jobs_total", "queued", "running", "succeeded", "failed", "cancelled", "epochs_done", "epochs_total", "progress_percent", "eta_seconds")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    JOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_DONE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    spec: SweepSpec
    created_at_ms: int
    jobs_total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    epochs_done: int
    epochs_total: int
    progress_percent: float
    eta_seconds: float
    def __init__(self, spec: _Optional[_Union[SweepSpec, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., jobs_total: _Optional[int] = ..., queued: _Optional[int] = ..., running: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., epochs_done: _Optional[int] = ..., epochs_total: _Optional[int] = ..., progress_percent: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("id", "hostname", "gpus", "slots", "registered_at_ms", "last_seen_ms", "running_jobs", "data_files", "idle_slots")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DATA_FILES_FIELD_NUMBER: _ClassVar[int]
    IDLE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    hostname: str
    gpus: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    registered_at_ms: int
    last_seen_ms: int
    running_jobs: int
    data_files: _containers.RepeatedCompositeFieldContainer[DataFile]
    idle_slots: int
    def __init__(self, id: _Optional[str] = ..., hostname: _Optional[str] = ..., gpus: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., registered_at_ms: _Optional[int] = ..., last_seen_ms: _Optional[int] = ..., running_jobs: _Optional[int] = ..., data_files: _Optional[_Iterable[_Union[DataFile, _Mapping]]] = ..., idle_slots: _Optional[int] = ...) -> None: ...

class Fence(_message.Message):
    __slots__ = ("job_id", "attempt", "lease_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    attempt: int
    lease_token: str
    def __init__(self, job_id: _Optional[int] = ..., attempt: _Optional[int] = ..., lease_token: _Optional[str] = ...) -> None: ...

class SubmitSweepRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: SweepSpec
    def __init__(self, spec: _Optional[_Union[SweepSpec, _Mapping]] = ...) -> None: ...

class SubmitSweepResponse(_message.Message):
    __slots__ = ("sweep", "jobs_created", "jobs_existing")
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    JOBS_CREATED_FIELD_NUMBER: _ClassVar[int]
    JOBS_EXISTING_FIELD_NUMBER: _ClassVar[int]
    sweep: str
    jobs_created: int
    jobs_existing: int
    def __init__(self, sweep: _Optional[str] = ..., jobs_created: _Optional[int] = ..., jobs_existing: _Optional[int] = ...) -> None: ...

class ListSweepsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSweepsResponse(_message.Message):
    __slots__ = ("sweeps",)
    SWEEPS_FIELD_NUMBER: _ClassVar[int]
    sweeps: _containers.RepeatedCompositeFieldContainer[SweepSummary]
    def __init__(self, sweeps: _Optional[_Iterable[_Union[SweepSummary, _Mapping]]] = ...) -> None: ...

class GetSweepRequest(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: str
    def __init__(self, sweep: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("sweep", "state", "variant")
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    sweep: str
    state: JobState
    variant: str
    def __init__(self, sweep: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., variant: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    def __init__(self, job_id: _Optional[int] = ...) -> None: ...

class ExportSweepRequest(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: str
    def __init__(self, sweep: _Optional[str] = ...) -> None: ...

class JobDetail(_message.Message):
    __slots__ = ("job", "epochs")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    epochs: _containers.RepeatedCompositeFieldContainer[EpochMetrics]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., epochs: _Optional[_Iterable[_Union[EpochMetrics, _Mapping]]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "lease_ttl_ms")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    lease_ttl_ms: int
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., lease_ttl_ms: _Optional[int] = ...) -> None: ...

class WatchSweepRequest(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: str
    def __init__(self, sweep: _Optional[str] = ...) -> None: ...

class SweepEvent(_message.Message):
    __slots__ = ("snapshot", "job_changed", "epoch_recorded")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    JOB_CHANGED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_RECORDED_FIELD_NUMBER: _ClassVar[int]
    snapshot: SweepSummary
    job_changed: Job
    epoch_recorded: EpochRecorded
    def __init__(self, snapshot: _Optional[_Union[SweepSummary, _Mapping]] = ..., job_changed: _Optional[_Union[Job, _Mapping]] = ..., epoch_recorded: _Optional[_Union[EpochRecorded, _Mapping]] = ...) -> None: ...

class EpochRecorded(_message.Message):
    __slots__ = ("job_id", "variant", "seed", "metrics")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    variant: str
    seed: int
    metrics: EpochMetrics
    def __init__(self, job_id: _Optional[int] = ..., variant: _Optional[str] = ..., seed: _Optional[int] = ..., metrics: _Optional[_Union[EpochMetrics, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    def __init__(self, job_id: _Optional[int] = ...) -> None: ...

class CancelSweepRequest(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: str
    def __init__(self, sweep: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: int
    def __init__(self, cancelled: _Optional[int] = ...) -> None: ...

class RetryJobsRequest(_message.Message):
    __slots__ = ("job_id", "sweep", "failed", "cancelled")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    sweep: str
    failed: bool
    cancelled: bool
    def __init__(self, job_id: _Optional[int] = ..., sweep: _Optional[str] = ..., failed: bool = ..., cancelled: bool = ...) -> None: ...

class RetryJobsResponse(_message.Message):
    __slots__ = ("retried",)
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    retried: int
    def __init__(self, retried: _Optional[int] = ...) -> None: ...

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "hostname", "gpus", "slots", "data_files")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    DATA_FILES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hostname: str
    gpus: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    data_files: _containers.RepeatedCompositeFieldContainer[DataFile]
    def __init__(self, worker_id: _Optional[str] = ..., hostname: _Optional[str] = ..., gpus: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., data_files: _Optional[_Iterable[_Union[DataFile, _Mapping]]] = ...) -> None: ...

class DataFile(_message.Message):
    __slots__ = ("name", "md5")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MD5_FIELD_NUMBER: _ClassVar[int]
    name: str
    md5: str
    def __init__(self, name: _Optional[str] = ..., md5: _Optional[str] = ...) -> None: ...

class RegisterWorkerResponse(_message.Message):
    __slots__ = ("lease_ttl_ms", "heartbeat_interval_ms")
    LEASE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    lease_ttl_ms: int
    heartbeat_interval_ms: int
    def __init__(self, lease_ttl_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class LeaseJobRequest(_message.Message):
    __slots__ = ("worker_id", "slot", "kinds")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    slot: int
    kinds: _containers.RepeatedScalarFieldContainer[JobKind]
    def __init__(self, worker_id: _Optional[str] = ..., slot: _Optional[int] = ..., kinds: _Optional[_Iterable[_Union[JobKind, str]]] = ...) -> None: ...

class LeaseJobResponse(_message.Message):
    __slots__ = ("job", "retry_after_ms", "queued")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    job: JobAssignment
    retry_after_ms: int
    queued: int
    def __init__(self, job: _Optional[_Union[JobAssignment, _Mapping]] = ..., retry_after_ms: _Optional[int] = ..., queued: _Optional[int] = ...) -> None: ...

class JobAssignment(_message.Message):
    __slots__ = ("fence", "sweep", "variant", "seed", "epochs", "batch_size", "learning_rate", "data", "lease_ttl_ms", "epochs_stored", "command")
    FENCE_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_STORED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    fence: Fence
    sweep: str
    variant: str
    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    data: DataOptions
    lease_ttl_ms: int
    epochs_stored: int
    command: CommandJob
    def __init__(self, fence: _Optional[_Union[Fence, _Mapping]] = ..., sweep: _Optional[str] = ..., variant: _Optional[str] = ..., seed: _Optional[int] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., data: _Optional[_Union[DataOptions, _Mapping]] = ..., lease_ttl_ms: _Optional[int] = ..., epochs_stored: _Optional[int] = ..., command: _Optional[_Union[CommandJob, _Mapping]] = ...) -> None: ...

class CommandJob(_message.Message):
    __slots__ = ("argv", "workdir", "env", "timeout_seconds", "params")
    class EnvEntry(_message.Message):
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
    ARGV_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    workdir: str
    env: _containers.ScalarMap[str, str]
    timeout_seconds: int
    params: _containers.ScalarMap[str, str]
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., workdir: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., timeout_seconds: _Optional[int] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "leases", "idle_slots")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    IDLE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    leases: _containers.RepeatedCompositeFieldContainer[Fence]
    idle_slots: int
    def __init__(self, worker_id: _Optional[str] = ..., leases: _Optional[_Iterable[_Union[Fence, _Mapping]]] = ..., idle_slots: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseStatus]
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseStatus, _Mapping]]] = ...) -> None: ...

class LeaseStatus(_message.Message):
    __slots__ = ("job_id", "verdict")
    class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VERDICT_UNSPECIFIED: _ClassVar[LeaseStatus.Verdict]
        VERDICT_RENEWED: _ClassVar[LeaseStatus.Verdict]
        VERDICT_CANCELLED: _ClassVar[LeaseStatus.Verdict]
        VERDICT_LOST: _ClassVar[LeaseStatus.Verdict]
    VERDICT_UNSPECIFIED: LeaseStatus.Verdict
    VERDICT_RENEWED: LeaseStatus.Verdict
    VERDICT_CANCELLED: LeaseStatus.Verdict
    VERDICT_LOST: LeaseStatus.Verdict
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    verdict: LeaseStatus.Verdict
    def __init__(self, job_id: _Optional[int] = ..., verdict: _Optional[_Union[LeaseStatus.Verdict, str]] = ...) -> None: ...

class EpochReport(_message.Message):
    __slots__ = ("fence", "metrics")
    FENCE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    fence: Fence
    metrics: EpochMetrics
    def __init__(self, fence: _Optional[_Union[Fence, _Mapping]] = ..., metrics: _Optional[_Union[EpochMetrics, _Mapping]] = ...) -> None: ...

class EpochAck(_message.Message):
    __slots__ = ("job_id", "epoch", "duplicate")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    epoch: int
    duplicate: bool
    def __init__(self, job_id: _Optional[int] = ..., epoch: _Optional[int] = ..., duplicate: bool = ...) -> None: ...

class CompleteJobRequest(_message.Message):
    __slots__ = ("fence",)
    FENCE_FIELD_NUMBER: _ClassVar[int]
    fence: Fence
    def __init__(self, fence: _Optional[_Union[Fence, _Mapping]] = ...) -> None: ...

class CompleteJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class FailJobRequest(_message.Message):
    __slots__ = ("fence", "error")
    FENCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    fence: Fence
    error: str
    def __init__(self, fence: _Optional[_Union[Fence, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class FailJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ReleaseJobRequest(_message.Message):
    __slots__ = ("fence",)
    FENCE_FIELD_NUMBER: _ClassVar[int]
    fence: Fence
    def __init__(self, fence: _Optional[_Union[Fence, _Mapping]] = ...) -> None: ...

class ReleaseJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckpointChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: CheckpointHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[CheckpointHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class CheckpointHeader(_message.Message):
    __slots__ = ("fence", "epoch", "size", "sha256")
    FENCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    fence: Fence
    epoch: int
    size: int
    sha256: str
    def __init__(self, fence: _Optional[_Union[Fence, _Mapping]] = ..., epoch: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class PutCheckpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("fence", "max_epoch")
    FENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCH_FIELD_NUMBER: _ClassVar[int]
    fence: Fence
    max_epoch: int
    def __init__(self, fence: _Optional[_Union[Fence, _Mapping]] = ..., max_epoch: _Optional[int] = ...) -> None: ...
