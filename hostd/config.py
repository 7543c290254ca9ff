"""hostd's settings, declared once: name, default, type and help.

:func:`load_config` merges, in order: the built-in defaults below, a TOML file
(every key optional; ``conf/hostd.toml`` lists them all with comments), then
command-line overrides. The result is a :class:`Config` passed down explicitly;
nothing reads settings from globals.
"""
from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .peers import peer_entries
from .policy import token_entry

__all__ = ["Setting", "SETTINGS", "Config", "ConfigError", "load_config", "LIMIT_KEYS"]


class ConfigError(ValueError):
    """A configuration file or value is invalid (the message names the key)."""


@dataclass(frozen=True)
class Setting:
    """One setting: dotted ``key`` (``section.name``; ``peers``, an array of tables, has no section),
    default, type and help text."""

    key: str
    default: object
    type: type
    help: str
    #: the values allowed (empty: any value of the type)
    choices: tuple = ()
    #: checks and normalises a value the plain type check cannot (``check(value, where)``,
    #: raising :class:`ConfigError`); a list setting with one may hold other items than strings
    check: Callable | None = None


def _check_tokens(tokens, where: str) -> list:
    """The ``[[auth.tokens]]`` tables, each checked (:func:`hostd.policy.token_entry`).

    :raises ConfigError: a malformed entry, or two entries sharing a name or a token.
    """
    entries, names, digests = [], {}, {}
    for index, entry in enumerate(tokens):
        try:
            entry = token_entry(entry, f"{where}[{index}]")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for seen, key in ((names, "name"), (digests, "token_sha256")):
            if entry[key] in seen:
                what = f"name {entry['name']!r}" if key == "name" else "token"
                raise ConfigError(f"{where}[{index}] has the same {what} as [{seen[entry[key]]}]")
            seen[entry[key]] = index
        entries.append(entry)
    return entries


def _check_peers(tables, where: str) -> list:
    """The ``[[peers]]`` tables, each checked (:func:`hostd.peers.peer_entries`).

    :raises ConfigError: a malformed table, or two peers with the same URL.
    """
    try:
        return peer_entries(tables, where)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _positive(value, where: str):
    """:raises ConfigError: ``value`` is not above zero."""
    if value <= 0:
        raise ConfigError(f"{where} must be above 0, got {value!r}")
    return value


SETTINGS = (
    Setting("server.bind", "127.0.0.1", str, "Address the HTTP server binds."),
    Setting("server.port", 8000, int, "TCP port of the HTTP server (0: pick a free one)."),
    Setting("server.workers", 4, int, "Number of gunicorn worker processes."),
    Setting("server.threads", 32, int,
            "Request threads of each worker process: requests in flight at once, per worker (idle"
            " kept-alive connections hold none)."),
    Setting("server.body_timeout_s", 10.0, float,
            "How long a client may pause while sending a request body before it is answered 408"
            " and its connection closed (a slow client holds a request thread meanwhile)."),
    Setting("server.graceful_timeout_s", 10.0, float,
            "On SIGTERM, how long in-flight requests may take to finish."),
    Setting("modules.paths", ["contrib_modules"], list,
            "Folders holding module folders (relative paths: from the current directory)."),
    Setting("modules.reload", True, bool,
            "Start, restart or stop modules when their folders are added, changed or removed."),
    Setting("modules.enable", ["*"], list,
            "Which of the modules found this node runs: names or shell patterns (several nodes"
            " sharing one store may each run some)."),
    Setting("modules.disable", [], list,
            "Modules this node does not run even though modules.enable names them (names or patterns)."),
    Setting("storage.data_dir", "./insights-data", str,
            "Private folder for the embedded store, sockets, module files and logs."),
    Setting("storage.mongo_url", "", str,
            "MongoDB URL to use; empty: start the embedded nx-27017 store under data_dir."),
    Setting("storage.journal", True, bool,
            "Acknowledge events only once the store has synced them to disk (safe against power"
            " loss; the embedded store then syncs every document, about 2,000 events/s). false:"
            " acknowledged events survive a crash of hostd or of the store, not of the machine."),
    Setting("storage.fs", "local", str,
            "Where modules' files (fs) live. local: in data_dir/modules/<module>/fs on this"
            " machine; gridfs: in GridFS in each module's own database (bucket insights_fs),"
            " shared by every hostd node on that MongoDB.", choices=("local", "gridfs")),
    Setting("storage.fs_sweep_s", 60.0, float,
            "How often hostd deletes the modules' files whose fs.expire time has come, in seconds."),
    Setting("limits.call_timeout_s", 30.0, float,
            "Wall-clock limit of one call into a sandbox; past it the caller gets 504."),
    Setting("limits.memory_mb", 1024, int, "Memory limit of one sandbox, in MiB."),
    Setting("limits.max_processes", 64, int,
            "Processes and threads one sandbox may run (a cgroup limit when hostd is root)."),
    Setting("limits.max_open_files", 256, int, "Files and sockets one sandbox may hold open."),
    Setting("limits.fs_mb", 1024.0, float,
            "Total size of one module's files (fs), in MiB: a write past it raises"
            " FileQuotaExceeded in the module and the file is left as it was (0: no limit)."),
    Setting("limits.max_body_mb", 16.0, float, "Largest request body accepted, in MiB (else 413)."),
    Setting("limits.max_retries", 5, int,
            "Times a failing event handler is retried on one event before it is dead-lettered."),
    Setting("limits.realtime_timeout_s", 5.0, float,
            "How long POST /event waits for realtime handlers before answering 504."),
    Setting("limits.start_timeout_s", 30.0, float,
            "How long a sandbox may take to load its module and report ready."),
    Setting("supervisor.backoff_initial_s", 0.5, float,
            "Delay before restarting a sandbox that died (doubles at each quick death)."),
    Setting("supervisor.backoff_max_s", 30.0, float, "Longest delay between restarts."),
    Setting("supervisor.crashloop_restarts", 5, int,
            "Quick deaths in a row after which a module is reported as crashloop."),
    Setting("supervisor.stable_after_s", 10.0, float,
            "A sandbox up this long is healthy again: its backoff is reset."),
    Setting("sandbox.isolation", "auto", str,
            "auto: each sandbox gets no network (the store through a relay limited to its database),"
            " a private view of the filesystem, Landlock and seccomp; as root also a uid of its own"
            " (root mode), else a user namespace of its own (user mode); user: user mode even as root;"
            " off: rlimits (and cgroups as root) only.",
            choices=("auto", "user", "off")),
    Setting("sandbox.prewarm", True, bool,
            "Fork sandboxes from a pre-warmed parent that imported numpy, pymongo and zmq once"
            " (fast start, shared memory); false: a fresh interpreter per sandbox."),
    Setting("sandbox.pin_cpu", True, bool,
            "Run each sandbox on one CPU, spread over hostd's CPUs (and the web workers' ZeroMQ"
            " thread for it there too): a call's wakeups then stay on that CPU, far cheaper than"
            " across CPUs on virtual machines; false: let the kernel move them."),
    Setting("sandbox.uid_base", 61000, int, "First of the uids given to sandboxes (one per module)."),
    Setting("events.batch_size", 2000, int, "Events read from the log and delivered per handler call."),
    Setting("events.poll_interval_s", 0.05, float, "How often idle consumers look for new events."),
    Setting("events.retention_days", 0.0, float,
            "Delete event-log entries received more than this many days ago, once every handler's"
            " cursor (of modules running, stopped or removed) is past them (0: keep every event)."),
    Setting("events.dead_letter_retention_days", 0.0, float,
            "Delete dead letters parked more than this many days ago (0: keep them until retried)."),
    Setting("events.retention_interval_s", 300.0, float,
            "How often hostd deletes what the two retention settings let go, in seconds."),
    Setting("cluster.node_id", "", str,
            "This node's name, shown in /healthz, /modules and the store's leases (unique per node);"
            " empty: the host name and a random id kept in data_dir."),
    Setting("cluster.lease_s", 10.0, float,
            "How long a node's lease on a handler (or partition) or a cron task lasts without renewal:"
            " when a node dies, another node that runs the module takes over within this time.", check=_positive),
    Setting("cluster.partitions", 4, int,
            "Partitions of a handler declared per_user=True or per_resource=True (unless it sets"
            " partitions=): each has its own cursor and lease, so partitions spread over nodes.", check=_positive),
    Setting("cluster.gap_grace_s", 15.0, float,
            "How long a consumer waits for an event seq reserved by an appender (this node or another)"
            " but not yet written, before stepping over it as lost with its writer.", check=_positive),
    Setting("logging.level", "INFO", str, "Log level of hostd and the sandboxes."),
    Setting("auth.required", "auto", str,
            "Whether requests need a token. auto: unless hostd is bound to a loopback address;"
            " always; never. A token presented is applied in every case.",
            choices=("auto", "always", "never")),
    Setting("auth.tokens", [], list,
            "The tokens: a [[auth.tokens]] table each (name, token_sha256 or token, scopes, default,"
            " allow, deny, fix; see hostd.policy.TOKEN_FIELDS).", check=_check_tokens),
    Setting("peers", [], list,
            "Other hostd nodes whose views and queries this node answers too: a [[peers]] table each"
            " (url, token, timeout_s, schema_cache_s; see hostd.peers.PEER_FIELDS).", check=_check_peers),
)

_BY_KEY = {s.key: s for s in SETTINGS}
#: Keys a module's module.toml may override under [limits].
LIMIT_KEYS = tuple(s.key.split(".", 1)[1] for s in SETTINGS if s.key.startswith("limits."))


def _coerce(setting: Setting, value, origin: str):
    if setting.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if setting.type is list and isinstance(value, str):
        value = [value]  # one folder for modules.paths; checked like any list below
    if not isinstance(value, setting.type) or (setting.type is int and isinstance(value, bool)):
        raise ConfigError(f"{origin}: {setting.key} must be {setting.type.__name__}, got {value!r}")
    if setting.check is not None:
        return setting.check(value, f"{origin}: {setting.key}")
    if setting.type is list and not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{origin}: {setting.key} must be a list of strings, got {value!r}")
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{origin}: {setting.key} must be one of {', '.join(map(repr, setting.choices))},"
                          f" got {value!r}")
    return value


class Config:
    """Effective settings, read by dotted key: ``config["limits.call_timeout_s"]``."""

    def __init__(self, values: dict):
        self._values = dict(values)

    def __getitem__(self, key: str):
        return self._values[key]

    def as_dict(self) -> dict:
        """:returns: a copy of every setting, by dotted key."""
        return dict(self._values)

    def limits(self, overrides: dict | None = None, origin: str = "module.toml") -> dict:
        """:returns: the ``limits.*`` settings (short names), with a module's overrides applied.

        :raises ConfigError: an unknown or ill-typed limit.
        """
        limits = {k: self._values[f"limits.{k}"] for k in LIMIT_KEYS}
        for name, value in (overrides or {}).items():
            if name not in limits:
                raise ConfigError(f"{origin}: unknown limit {name!r} (known: {', '.join(LIMIT_KEYS)})")
            limits[name] = _coerce(_BY_KEY[f"limits.{name}"], value, origin)
        return limits

    def data_path(self, *parts: str) -> Path:
        """:returns: a path under the data dir."""
        return Path(self._values["storage.data_dir"]).joinpath(*parts)


def _flatten(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in _BY_KEY:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Build the effective configuration.

    :param path: a TOML file merged over the defaults (every key optional).
    :param overrides: dotted keys from the command line (``None`` values are ignored).
    :raises ConfigError: unreadable file, unknown key, or ill-typed value.
    """
    values = {s.key: s.default for s in SETTINGS}
    sources = []
    if path is not None:
        try:
            sources.append((str(path), _flatten(tomllib.loads(Path(path).read_text(encoding="utf-8")))))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: {err}") from err
    sources.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}))
    for origin, table in sources:
        for key, value in table.items():
            if key not in _BY_KEY:
                raise ConfigError(f"{origin}: unknown setting {key!r}")
            values[key] = _coerce(_BY_KEY[key], value, origin)
    values["storage.data_dir"] = str(Path(values["storage.data_dir"]).resolve())
    return Config(values)
