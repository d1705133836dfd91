"""Gateway configuration: a TOML file, then JISR_* environment overrides, validated once.

Every error names the file (or variable) and the key at fault. Relative paths in a file
are relative to that file; relative paths from the environment, to the working directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adapters.catalog import READERS

INSTITUTIONS = tuple(READERS)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the source and key."""


@dataclass(frozen=True, slots=True)
class Transport:
    """How the gateway reaches one institution."""

    kind: str  # "embedded" | "remote"
    target: str = ""
    timeout_s: float = 2.0
    # A required backend's outage makes the gateway not ready (docs/deployment.md, "Probes");
    # any other's is reported by the probe and fails only the calls that need it.
    required: bool = False
    # Fetches to it in flight at once (a bulkhead: a hung backend holds at most this many
    # worker threads; adapters/resilience.py). None: one fewer than the workers.
    max_in_flight: int | None = None


@dataclass(frozen=True, slots=True)
class Config:
    listen: str = "127.0.0.1:50051"
    workers: int = 4
    grace_s: float = 10.0
    # What one partner may hold (gateway/services/door.py, docs/security.md "Limits").
    stream_workers: int = 8  # threads for batch streams (each open stream holds one)
    request_timeout_s: float = 10.0  # a request message must arrive within this
    stream_idle_s: float = 60.0  # a stream's next request, or the caller taking its next answer
    calls_per_institution: int = 256  # calls open at once (arrived or not)
    streams_per_institution: int = 2  # batch streams and audit queries open at once
    # Registry-event subscriptions (Subscribe streams): long-lived, so a lane of their own,
    # never taking a batch stream's place (docs/events.md, "Delivery").
    subscription_workers: int = 16
    subscriptions_per_institution: int = 4
    max_message_bytes: int = 1024 * 1024  # one request message
    max_stream_seconds: float = 3600.0  # a batch stream's whole life
    max_stream_batches: int = 10_000  # a batch stream's batches (10,000,000 subjects)
    max_concurrent_rpcs: int = 16_384  # calls open at once in a process, all institutions
    data_dir: Path = Path("var")
    # Where the gateway writes (consents on SQLite); None: data_dir.
    state_dir: Path | None = None
    programmes: Path | None = None  # None: the programmes shipped with Jisr
    policy: Path | None = None  # None: the (illustrative) policy shipped with Jisr
    pki_dir: Path = Path("var/pki")  # CA, server certificate, gateway key, trust store
    # Development only: no TLS, and the caller's institution is taken from its token.
    insecure_plaintext: bool = False
    # A signed audit checkpoint every N records or T seconds, whichever comes first.
    audit_checkpoint_every: int = 1000
    audit_checkpoint_seconds: float = 10.0
    # host:port for Prometheus /metrics; None: no metrics endpoint. With several
    # processes, process i serves it on port + i (docs/deployment.md).
    metrics_listen: str | None = None
    # Gateway processes sharing the listen port (SO_REUSEPORT); None: the CPUs available.
    processes: int | None = None
    # Each of several processes bound to one CPU of those available (worker i to the
    # i-th): fewer cross-CPU lock hand-offs; for a host or a cpuset given to Jisr alone.
    pin_processes: bool = False
    # host:port of the plaintext liveness/readiness probes (no client certificate);
    # None: no probe port (`jisr health` then has nothing to ask).
    health_listen: str | None = None
    # PostgreSQL URL for consents (and, later, the audit); None: SQLite in data_dir.
    database_url: str | None = None
    # Contest cases (docs/contests.md): days a DPO has to answer (fractions allowed, for
    # trials), and seconds between two sweeps escalating the unanswered ones.
    contest_answer_days: float = 30.0
    contest_sweep_seconds: float = 60.0
    # Registry events (docs/events.md): seconds between two reads of the registries'
    # journals, days the log keeps an event, and the longest a followed Subscribe stream
    # lasts before it ends and the subscriber resumes from its cursor.
    events_poll_seconds: float = 0.2
    events_retention_days: float = 90.0
    events_max_stream_seconds: float = 3600.0
    # Due process (docs/events.md): seconds between two sweeps of the proposed actions
    # (notices run for days: a second is prompt, and a sweep reads every waiting action).
    due_process_sweep_seconds: float = 1.0
    # Transparency (docs/transparency.md): where `jisr transparency publish` writes, read by
    # the observatory's gRPC read; None: data_dir/publications.
    publications: Path | None = None
    institutions: Mapping[str, Transport] = field(
        default_factory=lambda: {name: Transport("embedded") for name in INSTITUTIONS}
    )


DEFAULT_CONFIG = Path("/etc/jisr/jisr.toml")


def config_path(
    given: Path | None, env: Mapping[str, str], default: Path = DEFAULT_CONFIG
) -> Path | None:
    """Which file configures the gateway: `--config`, else JISR_CONFIG, else
    /etc/jisr/jisr.toml if there is one (the container image's and the systemd unit's),
    else none (the built-in defaults)."""
    if given is not None:
        return given
    if env.get("JISR_CONFIG"):
        return Path(env["JISR_CONFIG"])
    return default if default.is_file() else None


def load(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """The file's settings (defaults without a file) with the environment on top."""
    config = Config()
    if path is not None:
        config = _from_file(path)
    return _from_env(config, os.environ if env is None else env)


def _from_file(path: Path) -> Config:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    base = path.resolve().parent
    _only(doc, {"server", "data", "security", "audit", "institutions"}, f"{path}")
    server = _section(doc, "server", path)
    data = _section(doc, "data", path)
    security = _section(doc, "security", path)
    audit = _section(doc, "audit", path)
    _only(audit, {"checkpoint_every", "checkpoint_seconds"}, f"{path}: [audit]")
    _only(server, _SERVER_KEYS, f"{path}: [server]")
    _only(data, {"dir", "programmes", "state_dir"}, f"{path}: [data]")
    _only(security, {"pki_dir", "policy", "insecure_plaintext"}, f"{path}: [security]")
    plaintext = security.get("insecure_plaintext", False)
    if not isinstance(plaintext, bool):
        raise ConfigError(f"{path}: [security]: insecure_plaintext: must be true or false")
    config = Config()
    institutions = dict(config.institutions)
    for name, raw in _section(doc, "institutions", path).items():
        where = f"{path}: [institutions.{name}]"
        if name not in INSTITUTIONS:
            raise ConfigError(f"{where}: unknown institution; known: {', '.join(INSTITUTIONS)}")
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        institutions[name] = _transport(raw, where)
    where = f"{path}: [server]"
    return Config(
        listen=address_value(server.get("listen", config.listen), f"{where}: listen"),
        workers=_int(server, "workers", config.workers, where),
        grace_s=float(_int(server, "grace_seconds", int(config.grace_s), where)),
        stream_workers=_int(server, "stream_workers", config.stream_workers, where),
        request_timeout_s=float(
            _int(server, "request_timeout_seconds", int(config.request_timeout_s), where)
        ),
        stream_idle_s=float(_int(server, "stream_idle_seconds", int(config.stream_idle_s), where)),
        calls_per_institution=_int(
            server, "max_calls_per_institution", config.calls_per_institution, where
        ),
        streams_per_institution=_int(
            server, "max_streams_per_institution", config.streams_per_institution, where
        ),
        subscription_workers=_int(
            server, "subscription_workers", config.subscription_workers, where
        ),
        subscriptions_per_institution=_int(
            server,
            "max_subscriptions_per_institution",
            config.subscriptions_per_institution,
            where,
        ),
        max_message_bytes=_int(server, "max_message_bytes", config.max_message_bytes, where),
        max_stream_seconds=float(
            _int(server, "max_stream_seconds", int(config.max_stream_seconds), where)
        ),
        max_stream_batches=_int(server, "max_stream_batches", config.max_stream_batches, where),
        max_concurrent_rpcs=_int(server, "max_concurrent_rpcs", config.max_concurrent_rpcs, where),
        processes=processes_value(server.get("processes", "auto"), f"{where}: processes"),
        pin_processes=_bool(server, "pin_processes", where),
        health_listen=_optional_address(server, "health_listen", where),
        metrics_listen=_optional_address(server, "metrics_listen", where),
        data_dir=base / _str(data, "dir", str(config.data_dir), f"{path}: [data]"),
        programmes=_optional_path(base, data, "programmes", f"{path}: [data]"),
        state_dir=_optional_path(base, data, "state_dir", f"{path}: [data]"),
        policy=_optional_path(base, security, "policy", f"{path}: [security]"),
        pki_dir=base / _str(security, "pki_dir", str(config.pki_dir), f"{path}: [security]"),
        insecure_plaintext=plaintext,
        audit_checkpoint_every=_int(
            audit, "checkpoint_every", config.audit_checkpoint_every, f"{path}: [audit]"
        ),
        audit_checkpoint_seconds=_file_seconds(
            audit, "checkpoint_seconds", config.audit_checkpoint_seconds, f"{path}: [audit]"
        ),
        institutions=institutions,
    )


def _bool(table: Mapping[str, Any], key: str, where: str) -> bool:
    """A true/false key of a file, false when absent."""
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key}: must be true or false")
    return value


def _file_seconds(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    """A number of seconds in a file (fractions allowed), within (0, 86400)."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 86_400:
        raise ConfigError(f"{where}: {key}: must be a number of seconds between 0 and 86400")
    return float(value)


_SERVER_KEYS = {
    "listen",
    "workers",
    "grace_seconds",
    "stream_workers",
    "request_timeout_seconds",
    "stream_idle_seconds",
    "max_calls_per_institution",
    "max_streams_per_institution",
    "subscription_workers",
    "max_subscriptions_per_institution",
    "max_message_bytes",
    "max_stream_seconds",
    "max_stream_batches",
    "max_concurrent_rpcs",
    "processes",
    "pin_processes",
    "health_listen",
    "metrics_listen",
}

MAX_PROCESSES = 256


def processes_value(value: object, where: str) -> int | None:
    """`auto` (None: the CPUs available) or a number of processes, 1 to MAX_PROCESSES."""
    if value == "auto":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise ConfigError(f"{where}: must be 'auto' or a whole number from 1 to {MAX_PROCESSES}")
    return value


def address_value(value: object, where: str) -> str:
    """A `host:port` (IPv6 in brackets), port 0 to 65535."""
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not port.isdigit() or int(port) > 65_535:
        raise ConfigError(f"{where}: must be HOST:PORT (port 0 to 65535), e.g. 127.0.0.1:8071")
    return str(value)


def _env_address(env: Mapping[str, str], name: str) -> str:
    return address_value(env[name], f"environment: {name}")


def _env_processes(env: Mapping[str, str], name: str) -> int | None:
    return processes_value(env[name], f"environment: {name}")


def _optional_address(table: Mapping[str, Any], key: str, where: str) -> str | None:
    return address_value(table[key], f"{where}: {key}") if key in table else None


def _optional_path(base: Path, table: Mapping[str, Any], key: str, where: str) -> Path | None:
    if key not in table:
        return None
    return base / _str(table, key, "", where)


def _transport(raw: dict[str, Any], where: str) -> Transport:
    _only(raw, {"transport", "target", "timeout_ms", "required", "max_in_flight"}, where)
    kind = raw.get("transport", "embedded")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}: required: must be true or false")
    if kind == "embedded":
        extra = sorted({"target", "timeout_ms", "required", "max_in_flight"} & set(raw))
        if extra:
            raise ConfigError(f'{where}: {extra[0]}: only for transport = "remote"')
        return Transport("embedded")
    if kind != "remote":
        raise ConfigError(f"{where}: transport: must be 'embedded' or 'remote'")
    target = raw.get("target")
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(f"{where}: target: a remote transport needs 'host:port'")
    timeout_ms = _int(raw, "timeout_ms", 2000, where)
    return Transport(
        "remote",
        target=target,
        timeout_s=timeout_ms / 1000,
        required=required,
        max_in_flight=_int(raw, "max_in_flight", 1, where) if "max_in_flight" in raw else None,
    )


def _flag(env: Mapping[str, str], name: str) -> bool:
    if env[name] not in ("0", "1"):
        raise ConfigError(f"environment: {name}: must be 0 or 1")
    return env[name] == "1"


def _whole(env: Mapping[str, str], name: str) -> int:
    return _int(env, name, 0, "environment")


def _seconds(env: Mapping[str, str], name: str) -> float:
    try:
        value = float(env[name])
    except ValueError:
        raise ConfigError(f"environment: {name}: must be a number of seconds") from None
    if not 0 < value < 86_400:
        raise ConfigError(f"environment: {name}: must be between 0 and 86400 seconds")
    return value


def _days(env: Mapping[str, str], name: str) -> float:
    try:
        value = float(env[name])
    except ValueError:
        raise ConfigError(f"environment: {name}: must be a number of days") from None
    if not 0 < value <= 3650:
        raise ConfigError(f"environment: {name}: must be more than 0 and at most 3650 days")
    return value


def _path(env: Mapping[str, str], name: str) -> Path:
    return Path(env[name])


def _text(env: Mapping[str, str], name: str) -> str:
    return env[name]


# Environment variable -> (Config field, how to read it). docs/configuration.md lists them.
_ENV: dict[str, tuple[str, Callable[[Mapping[str, str], str], Any]]] = {
    "JISR_LISTEN": ("listen", _env_address),
    "JISR_WORKERS": ("workers", _whole),
    "JISR_STREAM_WORKERS": ("stream_workers", _whole),
    "JISR_GRACE_SECONDS": ("grace_s", _seconds),
    "JISR_REQUEST_TIMEOUT_SECONDS": ("request_timeout_s", _seconds),
    "JISR_STREAM_IDLE_SECONDS": ("stream_idle_s", _seconds),
    "JISR_MAX_CALLS_PER_INSTITUTION": ("calls_per_institution", _whole),
    "JISR_MAX_STREAMS_PER_INSTITUTION": ("streams_per_institution", _whole),
    "JISR_SUBSCRIPTION_WORKERS": ("subscription_workers", _whole),
    "JISR_MAX_SUBSCRIPTIONS_PER_INSTITUTION": ("subscriptions_per_institution", _whole),
    "JISR_MAX_MESSAGE_BYTES": ("max_message_bytes", _whole),
    "JISR_MAX_STREAM_SECONDS": ("max_stream_seconds", _seconds),
    "JISR_MAX_STREAM_BATCHES": ("max_stream_batches", _whole),
    "JISR_MAX_CONCURRENT_RPCS": ("max_concurrent_rpcs", _whole),
    "JISR_DATA_DIR": ("data_dir", _path),
    "JISR_STATE_DIR": ("state_dir", _path),
    "JISR_PROGRAMMES": ("programmes", _path),
    "JISR_POLICY": ("policy", _path),
    "JISR_PKI_DIR": ("pki_dir", _path),
    "JISR_DATABASE_URL": ("database_url", _text),
    "JISR_INSECURE_PLAINTEXT": ("insecure_plaintext", _flag),
    "JISR_AUDIT_CHECKPOINT_EVERY": ("audit_checkpoint_every", _whole),
    "JISR_AUDIT_CHECKPOINT_SECONDS": ("audit_checkpoint_seconds", _seconds),
    "JISR_METRICS_LISTEN": ("metrics_listen", _env_address),
    "JISR_PROCESSES": ("processes", _env_processes),
    "JISR_PIN_PROCESSES": ("pin_processes", _flag),
    "JISR_HEALTH_LISTEN": ("health_listen", _env_address),
    "JISR_CONTEST_ANSWER_DAYS": ("contest_answer_days", _days),
    "JISR_CONTEST_SWEEP_SECONDS": ("contest_sweep_seconds", _seconds),
    "JISR_EVENTS_POLL_SECONDS": ("events_poll_seconds", _seconds),
    "JISR_EVENTS_RETENTION_DAYS": ("events_retention_days", _days),
    "JISR_EVENTS_MAX_STREAM_SECONDS": ("events_max_stream_seconds", _seconds),
    "JISR_DUE_PROCESS_SWEEP_SECONDS": ("due_process_sweep_seconds", _seconds),
    "JISR_PUBLICATIONS_DIR": ("publications", _path),
}


def _from_env(config: Config, env: Mapping[str, str]) -> Config:
    changes: dict[str, Any] = {
        name: read(env, var) for var, (name, read) in _ENV.items() if env.get(var)
    }
    institutions = dict(config.institutions)
    for name in INSTITUTIONS:
        target = env.get(f"JISR_REMOTE_{name}")
        if target:
            institutions[name] = _transport(
                {"transport": "remote", "target": target}, f"environment: JISR_REMOTE_{name}"
            )
    changes["institutions"] = institutions
    return replace(config, **changes)


def _section(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}]: must be a table")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{where}: {extra[0]}: unknown key")


def _str(table: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key}: must be a non-empty string")
    return value


def _int(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{where}: {key}: must be a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {key}: must be a positive whole number")
    return value
