from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("psk", "agent_id", "agent_name", "ip_address", "capabilities", "tags", "instance_id")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PSK_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    psk: str
    agent_id: str
    agent_name: str
    ip_address: str
    capabilities: Capabilities
    tags: _containers.ScalarMap[str, str]
    instance_id: str
    def __init__(self, psk: _Optional[str] = ..., agent_id: _Optional[str] = ..., agent_name: _Optional[str] = ..., ip_address: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., instance_id: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("agent_id", "token", "expires_at")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    token: str
    expires_at: int
    def __init__(self, agent_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("max_concurrent_uploads", "bandwidth_mbps", "storage_type", "buffer_bytes", "finish_handshake", "local_paths", "crc32_integrity", "submit", "archive_operations", "reconnect_window")
    MAX_CONCURRENT_UPLOADS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    BUFFER_BYTES_FIELD_NUMBER: _ClassVar[int]
    FINISH_HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATHS_FIELD_NUMBER: _ClassVar[int]
    CRC32_INTEGRITY_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    max_concurrent_uploads: int
    bandwidth_mbps: int
    storage_type: str
    buffer_bytes: int
    finish_handshake: bool
    local_paths: _containers.RepeatedScalarFieldContainer[str]
    crc32_integrity: bool
    submit: bool
    archive_operations: bool
    reconnect_window: bool
    def __init__(self, max_concurrent_uploads: _Optional[int] = ..., bandwidth_mbps: _Optional[int] = ..., storage_type: _Optional[str] = ..., buffer_bytes: _Optional[int] = ..., finish_handshake: _Optional[bool] = ..., local_paths: _Optional[_Iterable[str]] = ..., crc32_integrity: _Optional[bool] = ..., submit: _Optional[bool] = ..., archive_operations: _Optional[bool] = ..., reconnect_window: _Optional[bool] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "accept", "reject", "credit", "committed", "progress", "result", "status_reply", "finishing", "submit_result")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_REPLY_FIELD_NUMBER: _ClassVar[int]
    FINISHING_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_RESULT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    accept: Accept
    reject: Reject
    credit: Credit
    committed: Committed
    progress: Progress
    result: Result
    status_reply: StatusReply
    finishing: Finishing
    submit_result: SubmitResult
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., accept: _Optional[_Union[Accept, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ..., committed: _Optional[_Union[Committed, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., status_reply: _Optional[_Union[StatusReply, _Mapping]] = ..., finishing: _Optional[_Union[Finishing, _Mapping]] = ..., submit_result: _Optional[_Union[SubmitResult, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "agent_name", "ip_address", "capabilities", "tags", "held_tasks", "version", "egress_ip", "line", "line_bps", "instance_id")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    HELD_TASKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EGRESS_IP_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    LINE_BPS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_name: str
    ip_address: str
    capabilities: Capabilities
    tags: _containers.ScalarMap[str, str]
    held_tasks: _containers.RepeatedCompositeFieldContainer[HeldTask]
    version: str
    egress_ip: str
    line: str
    line_bps: float
    instance_id: str
    def __init__(self, agent_id: _Optional[str] = ..., agent_name: _Optional[str] = ..., ip_address: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., held_tasks: _Optional[_Iterable[_Union[HeldTask, _Mapping]]] = ..., version: _Optional[str] = ..., egress_ip: _Optional[str] = ..., line: _Optional[str] = ..., line_bps: _Optional[float] = ..., instance_id: _Optional[str] = ...) -> None: ...

class HeldTask(_message.Message):
    __slots__ = ("task_id", "attempt", "committed_bytes")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    committed_bytes: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., committed_bytes: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("status", "current_tasks", "free_slots", "memory_mb", "tasks_completed", "egress_ip", "line", "line_bps")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TASKS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    TASKS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    EGRESS_IP_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    LINE_BPS_FIELD_NUMBER: _ClassVar[int]
    status: str
    current_tasks: int
    free_slots: int
    memory_mb: int
    tasks_completed: int
    egress_ip: str
    line: str
    line_bps: float
    def __init__(self, status: _Optional[str] = ..., current_tasks: _Optional[int] = ..., free_slots: _Optional[int] = ..., memory_mb: _Optional[int] = ..., tasks_completed: _Optional[int] = ..., egress_ip: _Optional[str] = ..., line: _Optional[str] = ..., line_bps: _Optional[float] = ...) -> None: ...

class Accept(_message.Message):
    __slots__ = ("task_id", "attempt", "resume_offset", "local_read")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESUME_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LOCAL_READ_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    resume_offset: int
    local_read: bool
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., resume_offset: _Optional[int] = ..., local_read: _Optional[bool] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("task_id", "attempt", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("task_id", "attempt", "bytes")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    bytes: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class Committed(_message.Message):
    __slots__ = ("task_id", "attempt", "offset", "session")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    offset: int
    session: bytes
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., session: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("task_id", "attempt", "uploaded_bytes", "total_bytes", "speed_bps", "eta_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPEED_BPS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    uploaded_bytes: int
    total_bytes: int
    speed_bps: float
    eta_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., uploaded_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., speed_bps: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("task_id", "attempt", "success", "filename", "biz_id", "error_kind", "error_message", "md5", "crc32", "voucher", "retry_after_seconds", "error_code", "file_digest", "problem", "reviews", "added", "videos")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    BIZ_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MD5_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    FILE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    success: bool
    filename: str
    biz_id: int
    error_kind: str
    error_message: str
    md5: str
    crc32: int
    voucher: str
    retry_after_seconds: float
    error_code: int
    file_digest: str
    problem: str
    reviews: _containers.RepeatedCompositeFieldContainer[ArchiveReview]
    added: _containers.RepeatedScalarFieldContainer[str]
    videos: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., success: _Optional[bool] = ..., filename: _Optional[str] = ..., biz_id: _Optional[int] = ..., error_kind: _Optional[str] = ..., error_message: _Optional[str] = ..., md5: _Optional[str] = ..., crc32: _Optional[int] = ..., voucher: _Optional[str] = ..., retry_after_seconds: _Optional[float] = ..., error_code: _Optional[int] = ..., file_digest: _Optional[str] = ..., problem: _Optional[str] = ..., reviews: _Optional[_Iterable[_Union[ArchiveReview, _Mapping]]] = ..., added: _Optional[_Iterable[str]] = ..., videos: _Optional[int] = ...) -> None: ...

class Finishing(_message.Message):
    __slots__ = ("task_id", "attempt", "offset", "session")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    offset: int
    session: bytes
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., session: _Optional[bytes] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("query_id", "status", "tasks", "memory_mb", "buffered_bytes")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_BYTES_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    status: str
    tasks: _containers.RepeatedCompositeFieldContainer[Progress]
    memory_mb: int
    buffered_bytes: int
    def __init__(self, query_id: _Optional[str] = ..., status: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[Progress, _Mapping]]] = ..., memory_mb: _Optional[int] = ..., buffered_bytes: _Optional[int] = ...) -> None: ...

class HubMessage(_message.Message):
    __slots__ = ("welcome", "offer", "chunk", "end_of_data", "cancel", "status_query", "drain", "token_refresh", "proceed", "submit", "reconnect_window")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_OF_DATA_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_QUERY_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_REFRESH_FIELD_NUMBER: _ClassVar[int]
    PROCEED_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    offer: Offer
    chunk: Chunk
    end_of_data: EndOfData
    cancel: Cancel
    status_query: StatusQuery
    drain: Drain
    token_refresh: TokenRefresh
    proceed: Proceed
    submit: Submit
    reconnect_window: ReconnectWindow
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., offer: _Optional[_Union[Offer, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., end_of_data: _Optional[_Union[EndOfData, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., status_query: _Optional[_Union[StatusQuery, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., token_refresh: _Optional[_Union[TokenRefresh, _Mapping]] = ..., proceed: _Optional[_Union[Proceed, _Mapping]] = ..., submit: _Optional[_Union[Submit, _Mapping]] = ..., reconnect_window: _Optional[_Union[ReconnectWindow, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("heartbeat_interval_seconds", "session_id", "token", "reconnect_window_seconds", "approval_pending")
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_PENDING_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_seconds: int
    session_id: str
    token: TokenRefresh
    reconnect_window_seconds: float
    approval_pending: bool
    def __init__(self, heartbeat_interval_seconds: _Optional[int] = ..., session_id: _Optional[str] = ..., token: _Optional[_Union[TokenRefresh, _Mapping]] = ..., reconnect_window_seconds: _Optional[float] = ..., approval_pending: _Optional[bool] = ...) -> None: ...

class ReconnectWindow(_message.Message):
    __slots__ = ("seconds",)
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    def __init__(self, seconds: _Optional[float] = ...) -> None: ...

class TokenRefresh(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class BiliCredentials(_message.Message):
    __slots__ = ("cookies", "access_key", "mid")
    COOKIES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    cookies: str
    access_key: str
    mid: int
    def __init__(self, cookies: _Optional[str] = ..., access_key: _Optional[str] = ..., mid: _Optional[int] = ...) -> None: ...

class Offer(_message.Message):
    __slots__ = ("task_id", "attempt", "part_id", "file_name", "file_size", "file_md5", "credentials", "line", "member_url", "resume_session", "resume_offset", "file_path", "await_proceed", "crc32_integrity", "file_digest")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PART_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    FILE_MD5_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_URL_FIELD_NUMBER: _ClassVar[int]
    RESUME_SESSION_FIELD_NUMBER: _ClassVar[int]
    RESUME_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    AWAIT_PROCEED_FIELD_NUMBER: _ClassVar[int]
    CRC32_INTEGRITY_FIELD_NUMBER: _ClassVar[int]
    FILE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    part_id: int
    file_name: str
    file_size: int
    file_md5: str
    credentials: BiliCredentials
    line: str
    member_url: str
    resume_session: bytes
    resume_offset: int
    file_path: str
    await_proceed: bool
    crc32_integrity: bool
    file_digest: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., part_id: _Optional[int] = ..., file_name: _Optional[str] = ..., file_size: _Optional[int] = ..., file_md5: _Optional[str] = ..., credentials: _Optional[_Union[BiliCredentials, _Mapping]] = ..., line: _Optional[str] = ..., member_url: _Optional[str] = ..., resume_session: _Optional[bytes] = ..., resume_offset: _Optional[int] = ..., file_path: _Optional[str] = ..., await_proceed: _Optional[bool] = ..., crc32_integrity: _Optional[bool] = ..., file_digest: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("task_id", "attempt", "offset", "data")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    offset: int
    data: bytes
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class EndOfData(_message.Message):
    __slots__ = ("task_id", "attempt", "md5", "crc32")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MD5_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    md5: str
    crc32: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., md5: _Optional[str] = ..., crc32: _Optional[int] = ...) -> None: ...

class Proceed(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("task_id", "attempt", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StatusQuery(_message.Message):
    __slots__ = ("query_id",)
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    def __init__(self, query_id: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason", "reconnect_after_seconds")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    reconnect_after_seconds: int
    def __init__(self, reason: _Optional[str] = ..., reconnect_after_seconds: _Optional[int] = ...) -> None: ...

class Submit(_message.Message):
    __slots__ = ("submit_id", "attempt", "credentials", "member_url", "api", "submission", "deadline_seconds", "sent_at_unix", "operation", "aid", "cover", "season_id", "section_id", "since_unix", "review_aids", "parts_per_request")
    SUBMIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_URL_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    AID_FIELD_NUMBER: _ClassVar[int]
    COVER_FIELD_NUMBER: _ClassVar[int]
    SEASON_ID_FIELD_NUMBER: _ClassVar[int]
    SECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    REVIEW_AIDS_FIELD_NUMBER: _ClassVar[int]
    PARTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    submit_id: str
    attempt: int
    credentials: BiliCredentials
    member_url: str
    api: str
    submission: bytes
    deadline_seconds: float
    sent_at_unix: float
    operation: str
    aid: int
    cover: bytes
    season_id: int
    section_id: int
    since_unix: float
    review_aids: _containers.RepeatedScalarFieldContainer[int]
    parts_per_request: int
    def __init__(self, submit_id: _Optional[str] = ..., attempt: _Optional[int] = ..., credentials: _Optional[_Union[BiliCredentials, _Mapping]] = ..., member_url: _Optional[str] = ..., api: _Optional[str] = ..., submission: _Optional[bytes] = ..., deadline_seconds: _Optional[float] = ..., sent_at_unix: _Optional[float] = ..., operation: _Optional[str] = ..., aid: _Optional[int] = ..., cover: _Optional[bytes] = ..., season_id: _Optional[int] = ..., section_id: _Optional[int] = ..., since_unix: _Optional[float] = ..., review_aids: _Optional[_Iterable[int]] = ..., parts_per_request: _Optional[int] = ...) -> None: ...

class ArchiveReview(_message.Message):
    __slots__ = ("aid", "bvid", "review", "state", "state_desc", "reason")
    AID_FIELD_NUMBER: _ClassVar[int]
    BVID_FIELD_NUMBER: _ClassVar[int]
    REVIEW_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_DESC_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    aid: int
    bvid: str
    review: str
    state: int
    state_desc: str
    reason: str
    def __init__(self, aid: _Optional[int] = ..., bvid: _Optional[str] = ..., review: _Optional[str] = ..., state: _Optional[int] = ..., state_desc: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SubmitResult(_message.Message):
    __slots__ = ("submit_id", "attempt", "success", "aid", "bvid", "error_kind", "error_message", "voucher", "retry_after_seconds", "error_code", "problem", "reviews", "added", "videos")
    SUBMIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    AID_FIELD_NUMBER: _ClassVar[int]
    BVID_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    submit_id: str
    attempt: int
    success: bool
    aid: int
    bvid: str
    error_kind: str
    error_message: str
    voucher: str
    retry_after_seconds: float
    error_code: int
    problem: str
    reviews: _containers.RepeatedCompositeFieldContainer[ArchiveReview]
    added: _containers.RepeatedScalarFieldContainer[str]
    videos: int
    def __init__(self, submit_id: _Optional[str] = ..., attempt: _Optional[int] = ..., success: _Optional[bool] = ..., aid: _Optional[int] = ..., bvid: _Optional[str] = ..., error_kind: _Optional[str] = ..., error_message: _Optional[str] = ..., voucher: _Optional[str] = ..., retry_after_seconds: _Optional[float] = ..., error_code: _Optional[int] = ..., problem: _Optional[str] = ..., reviews: _Optional[_Iterable[_Union[ArchiveReview, _Mapping]]] = ..., added: _Optional[_Iterable[str]] = ..., videos: _Optional[int] = ...) -> None: ...
