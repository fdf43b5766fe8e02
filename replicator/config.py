"""Typed configuration: one TOML file, every key overridable from the environment, validated once.

``REPLICATOR__WAREHOUSE__PORT=5433`` overrides ``[warehouse] port``; deeper sections add more ``__`` parts
(``REPLICATOR__SOURCE__DMS__CSV_NULL_VALUE``). Errors name the key and what was expected.

Secrets (passwords, tokens) are never written in the TOML file: they come from an environment variable
(``REPLICATOR__WAREHOUSE__PASSWORD``) or from a file (``password_file = "/run/secrets/pg"``), and are held
in ``Secret``, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

ENV_PREFIX = "REPLICATOR__"


class ConfigError(ValueError):
    """A configuration problem, worded for the operator: which key, what was found, what is expected."""


class Secret:
    """A secret value that does not leak through logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class DmsConfig:
    """AWS DMS S3 target settings: every S3Settings name, in snake case (``replicator dms-settings`` writes
    this section from ``aws dms describe-endpoints``). Settings that do not change how the files are read
    are accepted and ignored; the source says which once in its log (``replicator.sources.dms.settings``).
    """

    include_op_for_full_load: bool = False
    timestamp_column_name: str = ""
    csv_null_value: str = "NULL"
    add_column_name: bool = False
    data_format: Literal["csv", "parquet"] = "csv"
    compression_type: Literal["none", "gzip", "NONE", "GZIP"] = "none"
    csv_delimiter: str = ","
    csv_row_delimiter: str = "\n"
    rfc_4180: bool = True  # this project's first spelling; rfc4180 (AWS's) wins when set
    rfc4180: bool | None = None
    cdc_inserts_only: bool = False
    cdc_inserts_and_updates: bool = False
    use_csv_no_sup_value: bool = False
    csv_no_sup_value: str = ""
    date_partition_enabled: bool = False
    date_partition_sequence: Literal["YYYYMMDD", "YYYYMMDDHH", "YYYYMM", "MMYYYYDD", "DDMMYYYY"] = "YYYYMMDD"
    date_partition_delimiter: Literal["SLASH", "UNDERSCORE", "DASH", "NONE"] = "SLASH"
    preserve_transactions: bool = False
    cdc_path: str = ""
    bucket_folder: str = ""  # joined to source.path (unless the path already ends with it)
    # Accepted and ignored: they change how DMS writes or stores files, not what a reader sees in them.
    add_trailing_padding_character: bool | None = None
    bucket_name: str = ""
    canned_acl_for_objects: str = ""
    cdc_max_batch_interval: int | None = None
    cdc_min_file_size: int | None = None
    data_page_size: int | None = None
    date_partition_timezone: str = ""
    dict_page_size_limit: int | None = None
    enable_statistics: bool | None = None
    encoding_type: str = ""
    encryption_mode: str = ""
    expected_bucket_owner: str = ""
    external_table_definition: str = ""
    glue_catalog_generation: bool | None = None
    ignore_header_rows: int | None = None
    max_file_size: int | None = None
    parquet_timestamp_in_millisecond: bool | None = None
    parquet_version: Literal["parquet-1-0", "parquet-2-0", "PARQUET_1_0", "PARQUET_2_0"] | None = None
    row_group_length: int | None = None
    server_side_encryption_kms_key_id: str = ""
    service_access_role_arn: str = ""
    use_task_start_time_for_full_load_timestamp: bool | None = None
    # Not DMS settings: what bad input does to its table ("stop" until an operator decides, or
    # "quarantine" the row/file and go on), per-table overrides ("dbo.a=quarantine,dbo.b=stop"), and an SQS
    # queue of S3 event notifications used only as a hint to look sooner.
    bad_input_policy: Literal["stop", "quarantine"] = "stop"
    bad_input_policy_tables: str = ""
    sqs_queue_url: str = ""


@dataclass(frozen=True, slots=True)
class PostgresSourceConfig:
    """PostgreSQL logical replication (pgoutput) source."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: Secret | None = None  # REPLICATOR__SOURCE__POSTGRES__PASSWORD or password_file
    password_file: str = ""
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str = ""
    slot_name: str = "replicator"
    publication_name: str = "replicator"
    create_slot: bool = True
    create_publication: bool = True
    copy_workers: int = 0  # tables copied at once (initial snapshot, added tables); 0: cores, at most 4
    # Tables split into this many shards, each with its own publication and slot (``<name>_<k>`` when more
    # than one), so that several tasks can share the work (a slot is read by one connection). Changing it
    # is a procedure: README "Scaling out".
    shards: int = field(default=1, metadata={"min": 1})


@dataclass(frozen=True, slots=True)
class SqlServerSourceConfig:
    """SQL Server native change data capture tables."""

    host: str = "127.0.0.1"
    port: int = 1433
    database: str = "master"
    user: str = "sa"
    password: Secret | None = None  # REPLICATOR__SOURCE__SQLSERVER__PASSWORD or password_file
    password_file: str = ""
    poll_interval_seconds: float = 1.0
    net_changes: bool = False
    # When a poll finds nothing, the wait doubles from poll_interval_seconds up to this.
    max_poll_interval_seconds: float = 30.0
    page_rows: int = 10_000  # rows per query: bounds memory however large the backlog
    # "schema.table=capture_instance, ..." for tables whose capture instance is not <schema>_<table>.
    capture_instances: str = ""
    check_capture_job: bool = True  # false where no SQL Server Agent runs the capture (e.g. Azure SQL)
    server_time_zone: str = "UTC"  # IANA zone of the server clock: CDC commit times are server local time
    initial_load: bool = True  # load each table's current rows before its changes
    login_timeout_seconds: int = 15


@dataclass(frozen=True, slots=True)
class SourceConfig:
    kind: Literal["dms", "postgres", "sqlserver"] = "dms"
    path: str = ""  # dms (required): local folder or s3://bucket/prefix
    dms: DmsConfig = field(default_factory=DmsConfig)
    postgres: PostgresSourceConfig = field(default_factory=PostgresSourceConfig)
    sqlserver: SqlServerSourceConfig = field(default_factory=SqlServerSourceConfig)


@dataclass(frozen=True, slots=True)
class StagingConfig:
    path: str = ""  # required: local folder or s3://bucket/prefix


@dataclass(frozen=True, slots=True)
class S3Config:
    endpoint_url: str = ""  # empty: AWS's own endpoint
    region: str = ""
    # Encryption of every object the replicator writes (staged Parquet, manifests, state, quarantine): ""
    # leaves it to the bucket's default; "aws:kms" needs sse_kms_key_id (the key the task role and the
    # Redshift COPY role may use). expected_bucket_owner (an account id) goes with every call: a bucket of
    # another account with the same name is refused by S3 instead of receiving PHI.
    sse: Literal["", "AES256", "aws:kms"] = ""
    sse_kms_key_id: str = ""
    expected_bucket_owner: str = ""


@dataclass(frozen=True, slots=True)
class WarehouseConfig:
    kind: Literal["duckdb", "postgres", "redshift"] = "duckdb"
    path: str = ""  # duckdb only (required there)
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: Secret | None = None  # from REPLICATOR__WAREHOUSE__PASSWORD or password_file only
    password_file: str = ""
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str = ""
    connect_timeout_seconds: int = 10
    # redshift only (port 5439, sslmode other than "disable" means TLS):
    auth: Literal["password", "iam"] = "password"  # iam: temporary credentials from the task role
    cluster_identifier: str = ""  # iam, provisioned cluster
    workgroup: str = ""  # iam, Serverless workgroup
    region: str = ""  # iam and COPY; empty: the [s3] region
    iam_role: str = ""  # role ARN Redshift assumes to read staged Parquet (COPY ... IAM_ROLE)


@dataclass(frozen=True, slots=True)
class PoliciesConfig:
    """Column policies (schemas/ ``[policies]``): the HMAC key of ``hash``, a secret."""

    hmac_key: Secret | None = None  # REPLICATOR__POLICIES__HMAC_KEY or hmac_key_file
    hmac_key_file: str = ""


# Per warehouse: (batch.max_age_seconds, pipeline.merge_interval_seconds) when the config leaves them out.
# They bound commit-to-queryable latency (about max_age + merge_interval + one merge, see the README's
# "Latency"). DuckDB and PostgreSQL commit in milliseconds: well under a second. A Redshift commit costs
# hundreds of milliseconds and Redshift runs one at a time, so it gets fewer, larger merges.
LATENCY_DEFAULTS: dict[str, tuple[float, float]] = {
    "duckdb": (0.3, 0.15),
    "postgres": (0.3, 0.15),
    "redshift": (5.0, 5.0),
}


# Per warehouse: the batch size in bytes when ``batch.max_bytes`` is unset. DuckDB holds a batch's appended
# values in its transaction until the commit copies them into the table, beside the next batch being staged:
# with values of 300 kB-1 MB a 64 MB batch peaks at 635-666 MB, a 16 MB one at 334-371 MB (issue 13 point 8,
# tests/benchmarks/test_bench_pg_large_values.py); small rows merge as fast either way (a 1M-change backlog:
# 253-257k rows/s at 64 MB, 255-259k at 16 MB, same minutes).
BATCH_BYTES_DEFAULTS: dict[str, int] = {"duckdb": 16 << 20, "postgres": 64 << 20, "redshift": 64 << 20}


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_rows: int = field(default=100_000, metadata={"min": 1})
    max_bytes: int | None = field(default=None, metadata={"min": 1024})  # unset: BATCH_BYTES_DEFAULTS
    max_age_seconds: float | None = None  # unset: the warehouse's default (LATENCY_DEFAULTS)

    @property
    def bytes(self) -> int:
        """``max_bytes``, or the embedded default's when unset (``load`` fills it per warehouse)."""
        return BATCH_BYTES_DEFAULTS["duckdb"] if self.max_bytes is None else self.max_bytes

    @property
    def age(self) -> float:
        """``max_age_seconds``, or the low-latency default when unset (``load`` fills it per warehouse)."""
        return LATENCY_DEFAULTS["duckdb"][0] if self.max_age_seconds is None else self.max_age_seconds


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    poll_interval_seconds: float = 2.0  # how long to wait when the source has nothing new
    # How often staged batches are merged while the source streams; unset: the warehouse's default.
    merge_interval_seconds: float | None = None
    shutdown_grace_seconds: float = 25.0  # ECS gives 30 s between SIGTERM and SIGKILL

    @property
    def merge_interval(self) -> float:
        """``merge_interval_seconds``, or the low-latency default when unset."""
        if self.merge_interval_seconds is None:
            return LATENCY_DEFAULTS["duckdb"][1]
        return self.merge_interval_seconds


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Health, metrics and the admin API. The admin API needs a bearer token; without one it is off."""

    # Every address: with awsvpc, Prometheus, ECS health checks and load balancers reach the task's own ENI
    # address (loopback would hide /metrics and /healthz from them). The admin API can move off it below.
    host: str = "0.0.0.0"  # noqa: S104
    port: int = 9100  # 0: no HTTP server
    # The admin API on its own listener (reached through ECS Exec, a sidecar or a load balancer); the main
    # port then answers 404 to admin calls. 0: the admin API is on the main port.
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    admin_token: Secret | None = None  # REPLICATOR__HTTP__ADMIN_TOKEN or admin_token_file
    admin_token_file: str = ""
    # /readyz answers 503 when the daemon loop has not completed a round for this long (a hung merge, a
    # source that blocks): ECS and load balancers then see the task as unhealthy.
    ready_stall_seconds: float = 300.0
    # No client can starve the server: at most this many connections (a new one replaces the oldest idle
    # or slow one), and a whole request must arrive within request_timeout_seconds (see ops/httpserver.py).
    max_connections: int = 64
    request_timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """Who merges what, among the tasks running one config (one ``scope``); see ``replicator/ops/shares.py``.

    ``mode``: ``shared`` spreads the work (tables; PostgreSQL: shards) over every live task of the scope,
    each unit under its own fenced lease in ``_replicator.claims``; ``single`` is one lease for everything
    (``_replicator.leases``: one task merges, the others wait as standbys); ``auto`` is ``shared`` on
    PostgreSQL and Redshift targets and ``single`` on DuckDB, whose file one process at a time can open.
    Tasks that replicate disjoint table sets can also use different scopes and run side by side.
    """

    scope: str = "default"
    mode: Literal["auto", "single", "shared"] = "auto"
    ttl_seconds: float = 15.0  # a holder that stops renewing loses the lease after this long
    renew_interval_seconds: float = 3.0  # well below ttl: a few missed renewals are survivable


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a TTY, JSON lines otherwise


@dataclass(frozen=True, slots=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    staging: StagingConfig = field(default_factory=StagingConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    s3: S3Config = field(default_factory=S3Config)
    batch: BatchConfig = field(default_factory=BatchConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    log: LogConfig = field(default_factory=LogConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    schemas: str = "schemas"  # folder with table definitions
    base_dir: str = "."  # relative paths in the file are resolved against the file's folder


SECRET_KEYS = frozenset({"password", "admin_token", "hmac_key"})
# A shorter admin token can be guessed; an empty one would match "Authorization: Bearer " (issue 17).
MIN_ADMIN_TOKEN_CHARS = 32

T = TypeVar("T")


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (optional), apply environment overrides, validate, resolve relative paths."""
    env = os.environ if environ is None else environ
    doc: dict[str, Any] = {}
    if path is not None:
        doc = _parse(path)
        _refuse_inline_secrets(doc, "")
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and value != "":
            parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
            _set_path(doc, parts, _EnvText(value, name), name)
    cfg = _dms_spellings(_build(Config, doc, ""))
    cfg = _latency_defaults(cfg)
    base = path.parent if path is not None else Path(".")
    cfg = dataclasses.replace(cfg, base_dir=str(base))
    return _with_file_secrets(cfg)


def _latency_defaults(cfg: Config) -> Config:
    """Fill the batch age and size and the merge interval the config left out with its warehouse's
    defaults."""
    age, merge = LATENCY_DEFAULTS.get(cfg.warehouse.kind, LATENCY_DEFAULTS["duckdb"])
    if cfg.batch.max_age_seconds is None:
        cfg = dataclasses.replace(cfg, batch=dataclasses.replace(cfg.batch, max_age_seconds=age))
    if cfg.batch.max_bytes is None:
        size = BATCH_BYTES_DEFAULTS.get(cfg.warehouse.kind, BATCH_BYTES_DEFAULTS["duckdb"])
        cfg = dataclasses.replace(cfg, batch=dataclasses.replace(cfg.batch, max_bytes=size))
    if cfg.pipeline.merge_interval_seconds is None:
        pipeline = dataclasses.replace(cfg.pipeline, merge_interval_seconds=merge)
        cfg = dataclasses.replace(cfg, pipeline=pipeline)
    return cfg


def _dms_spellings(cfg: Config) -> Config:
    """One value per DMS setting: AWS's ``rfc4180`` wins over ``rfc_4180``, and ``bucket_folder`` joins the
    source path (DMS writes below ``bucket/BucketFolder/``) unless the path already ends with it."""
    d, path = cfg.source.dms, cfg.source.path
    if d.rfc4180 is not None:
        d = dataclasses.replace(d, rfc_4180=d.rfc4180)
    folder = d.bucket_folder.strip("/")
    if folder and path and not path.rstrip("/").endswith("/" + folder) and path.rstrip("/") != folder:
        path = f"{path.rstrip('/')}/{folder}"
    return dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, path=path, dms=d))


def _parse(path: Path) -> dict[str, Any]:
    """The config file's settings; every way of not getting them is a configuration error (exit 2)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a file (-c takes the TOML file)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _refuse_inline_secrets(doc: dict[str, Any], where: str) -> None:
    for key, value in doc.items():
        if isinstance(value, dict):
            _refuse_inline_secrets(value, f"{where}{key}.")
        elif key in SECRET_KEYS:
            env = ENV_PREFIX + (where + key).replace(".", "__").upper()
            raise ConfigError(
                f"{where}{key}: secrets are not accepted in the config file; set {env} or {key}_file"
            )


def _set_path(doc: dict[str, Any], parts: list[str], value: _EnvText, env_name: str) -> None:
    node = doc
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{env_name}: {p} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


class _EnvText(str):
    """A value from the environment: text that is converted to the field's type when validated, and that
    remembers its variable so that an error names it (``REPLICATOR__BATCH__MAX_ROWS=-5``)."""

    env_name: str

    def __new__(cls, value: str, env_name: str) -> _EnvText:
        text = super().__new__(cls, value)
        text.env_name = env_name
        return text


def _label(key: str, value: Any) -> str:
    """How an error names a setting: the key, and the environment variable when the value came from one."""
    if isinstance(value, _EnvText):
        shown = "***" if key.rsplit(".", 1)[-1] in SECRET_KEYS else str(value)
        return f"{value.env_name}={shown} ({key})"
    return key


def _build(cls: type[T], doc: Mapping[str, Any], where: str) -> T:
    if not isinstance(doc, Mapping):
        label = _label(where.rstrip(".") or "config", doc)
        raise ConfigError(f"{label}: expected a section (table), got {doc!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        value = doc[unknown[0]]
        env = f"{value.env_name}: " if isinstance(value, _EnvText) else ""
        raise ConfigError(
            f"{env}unknown key {where}{unknown[0]}; expected one of: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in doc.items():
        converted = _convert(hints[name], value, f"{where}{name}")
        # One wording for every bound: "expected at least N" (0 unless the field says otherwise).
        minimum = fields[name].metadata.get("min", 0)
        if isinstance(converted, int | float) and not isinstance(converted, bool) and converted < minimum:
            raise ConfigError(f"{_label(where + name, value)}: expected at least {minimum}, got {converted}")
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - all fields have defaults
        raise ConfigError(f"{where.rstrip('.')}: {exc}") from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    label = _label(key, value)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in get_args(hint) if a is not type(None)]
        return _convert(options[0], value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")  # type: ignore[arg-type]
    if hint is Secret:
        return Secret(str(value))
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{label}: expected one of {', '.join(map(repr, allowed))}, got {str(value)!r}")
        return str(value)
    if hint is bool:
        if isinstance(value, _EnvText):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{label}: expected a number, got {value!r}")
        try:
            number = hint(value) if isinstance(value, _EnvText) else value
        except ValueError:
            raise ConfigError(
                f"{label}: expected {'an integer' if hint is int else 'a number'}, got {value!r}"
            ) from None
        if hint is float and isinstance(number, int):
            number = float(number)
        if not isinstance(number, hint):
            raise ConfigError(
                f"{label}: expected {'an integer' if hint is int else 'a number'}, got {value!r}"
            )
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label}: expected text, got {value!r}")
        return str(value)
    raise ConfigError(f"{label}: unsupported setting type {hint}")  # pragma: no cover


def _with_file_secrets(cfg: T) -> T:
    """Fill every unset ``Secret`` field from its sibling ``<name>_file`` setting, at any depth."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            new = _with_file_secrets(value)
            if new is not value:
                changes[f.name] = new
        elif value is None and isinstance(getattr(cfg, f.name + "_file", None), str):
            path = getattr(cfg, f.name + "_file")
            if path:
                try:
                    changes[f.name] = Secret(Path(path).read_text().strip())
                except OSError as exc:
                    raise ConfigError(f"{f.name}_file: cannot read {path}: {exc.strerror}") from None
    return dataclasses.replace(cfg, **changes) if changes else cfg  # type: ignore[type-var]


def resolve(cfg: Config, location: str) -> str:
    """A local path from the config, relative to the config file's folder; S3 addresses unchanged."""
    if location.startswith("s3://") or Path(location).is_absolute():
        return location
    return str(Path(cfg.base_dir) / location)


def validate(cfg: Config) -> list[str]:
    """Cross-field checks that types alone cannot express. Returns problems (empty when fine)."""
    problems = []
    # Required keys first, all of them at once: an empty file says what it lacks instead of running on
    # defaults nobody chose.
    if cfg.source.kind == "dms" and not cfg.source.path:
        problems.append(_required("source.path", "the DMS output: a folder or s3://bucket/prefix"))
    if not cfg.staging.path:
        problems.append(_required("staging.path", "where batches are staged: a folder or s3://bucket/prefix"))
    if cfg.warehouse.kind == "duckdb" and not cfg.warehouse.path:
        problems.append(_required("warehouse.path", "the DuckDB file, with warehouse.kind = 'duckdb'"))
    if cfg.batch.max_rows < 1:
        problems.append("batch.max_rows: expected at least 1")
    if cfg.batch.bytes < 1024:
        problems.append("batch.max_bytes: expected at least 1024")
    if cfg.warehouse.kind == "postgres" and not cfg.warehouse.host:
        problems.append("warehouse.host: required when warehouse.kind = 'postgres'")
    if cfg.warehouse.kind == "redshift":
        wh = cfg.warehouse
        if not cfg.staging.path.startswith("s3://"):
            problems.append("staging.path: Redshift COPYs staged batches from S3 (s3://bucket/prefix)")
        if not wh.iam_role:
            problems.append("warehouse.iam_role: required for redshift (the role COPY uses to read staging)")
        if wh.auth == "iam" and not (wh.cluster_identifier or wh.workgroup):
            problems.append("warehouse.cluster_identifier or warehouse.workgroup: required with auth = 'iam'")
        if wh.auth == "password" and not wh.host:
            problems.append("warehouse.host: required for redshift with auth = 'password'")
    if cfg.lease.renew_interval_seconds * 2 > cfg.lease.ttl_seconds:
        problems.append("lease.renew_interval_seconds: expected at most half of lease.ttl_seconds")
    if cfg.lease.mode == "shared" and cfg.warehouse.kind == "duckdb":
        problems.append(
            'lease.mode: "shared" needs a PostgreSQL or Redshift warehouse (one process at a time opens a'
            ' DuckDB file); use "auto" or "single"'
        )
    if not cfg.lease.scope:
        problems.append("lease.scope: required (a name shared by the tasks that take turns)")
    if (cfg.s3.sse == "aws:kms") != bool(cfg.s3.sse_kms_key_id):
        problems.append(
            's3.sse_kms_key_id: required with s3.sse = "aws:kms", and only with it (a KMS key ARN)'
        )
    owner = cfg.s3.expected_bucket_owner
    if owner and not (owner.isdigit() and len(owner) == 12):
        problems.append(f"s3.expected_bucket_owner: expected a 12-digit AWS account id, got {owner!r}")
    if cfg.http.admin_port and cfg.http.admin_port == cfg.http.port:
        problems.append("http.admin_port: must differ from http.port (0 puts the admin API on http.port)")
    if cfg.http.admin_port and not cfg.http.port:
        problems.append("http.admin_port: needs http.port (http.port = 0 turns every listener off)")
    if cfg.http.max_connections < 4:
        problems.append("http.max_connections: expected at least 4 (probes, scrapes and an operator at once)")
    if cfg.http.request_timeout_seconds <= 0:
        problems.append("http.request_timeout_seconds: expected more than 0")
    problems.extend(admin_token_problems(cfg.http.admin_token))
    return problems


def admin_token_problems(token: Secret | None) -> list[str]:
    """No token turns the admin API off; a set one must be long enough to resist guessing (never shown)."""
    if token is None or len(token.reveal().strip()) >= MIN_ADMIN_TOKEN_CHARS:
        return []
    found = "empty" if not token.reveal().strip() else f"{len(token.reveal().strip())} characters"
    return [
        f"http.admin_token (REPLICATOR__HTTP__ADMIN_TOKEN or http.admin_token_file): must be at least"
        f" {MIN_ADMIN_TOKEN_CHARS} characters, found {found}; make one with `openssl rand -hex 32`, or unset"
        " it to turn the admin API off"
    ]


def _required(key: str, what: str) -> str:
    env = ENV_PREFIX + key.replace(".", "__").upper()
    return f"{key}: required ({what}; or {env})"
