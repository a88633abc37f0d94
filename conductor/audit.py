"""The audit log: every decision worth auditing, one entry each, handed to its sinks.

Every submit, dispatch, refusal (authentication, authorization, validation) and result.
Parameter values never appear, only their keys. An entry is a flat JSON object: ``ts``
(Unix seconds), ``event``, ``decision`` and the event's fields.

Where entries go is a list of sinks (conductor.toml ``[[audit_sinks]]``; none given: one
``file`` sink at ``audit_log``): the built-in ``file`` and ``syslog`` sinks, or any sink
installed as an entry point of the group ``orchestra.audit_sinks`` (orchestra/plugins.py).

Recording never fails the action it records. The queue is the truth: a job is
acknowledged once committed, and an audit entry that cannot be written then (a full
disk, a syslog daemon gone) must not turn that into an error the client would retry,
queueing the job twice. A sink that raises is logged (``audit_sink_failed``) and counted
in ``write_failures``, and the next sink gets the entry all the same.

The ``file`` sink writes one JSON object per line, each a single ``write(2)`` on an
O_APPEND descriptor, so a ``kill -9`` loses at most the line being written. A line it
cannot write is logged on stderr in full (``audit_write_failed``), kept in memory, and
written to the file, in order and ahead of newer lines, as soon as a write succeeds. It
is the only sink that keeps entries back: the others are told each entry once.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from logging.handlers import SysLogHandler
from pathlib import Path
from typing import Any, Protocol

from orchestra import log
from orchestra.config import ConductorConfig, PluginTable, listen_host
from orchestra.errors import StartupError
from orchestra.plugins import AUDIT_SINKS, Factory, Kind, Options, Registry, labels

logger = log.get("conductor")
# Lines kept while the file cannot be written; past this the oldest are dropped (and
# counted): each one is on stderr already.
MAX_BACKLOG = 100_000
RETRY_SECONDS = 1.0
DEFAULT_SYSLOG_ADDRESS = "/dev/log"
DEFAULT_SYSLOG_FACILITY = "authpriv"  # who may read it: the same people as auth.log
DEFAULT_SYSLOG_TAG = "orchestra-audit"
SYSLOG_INFO = 6  # every entry's severity: it records a decision, it reports no fault
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AuditSink(Protocol):
    """Where audit entries go (entry-point group ``orchestra.audit_sinks``).

    ``record`` is called on the conductor's event loop with every entry, in order: it must
    return at once (hand anything slow to a thread of its own), must not change the
    entry, and raises to say the entry did not get through. ``flush`` is called every
    couple of seconds and before ``close``: write what is waiting, True once nothing is.
    """

    def record(self, entry: Mapping[str, Any]) -> None: ...

    def flush(self) -> bool: ...

    def close(self) -> None: ...


def entry_json(entry: Mapping[str, Any]) -> str:
    """One entry as one JSON object (values JSON cannot hold are written as text)."""
    return json.dumps(entry, sort_keys=False, default=str)


class FileSink:
    """JSON lines appended to a file, with a backlog while the disk refuses them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StartupError(f"cannot open audit log {path}: {err.strerror}") from None
        self.backlog: deque[bytes] = deque(maxlen=MAX_BACKLOG)
        self.dropped = 0
        self.write_failures = 0  # lines that could not be written when recorded (metrics)
        self._retry_at = 0.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any], default: Path, base: Path) -> FileSink:
        """``path`` (default: the ``audit_log`` key)."""
        read = Options(options, "file sink")
        path = read.path("path", base, default)
        read.finish()
        assert path is not None
        return cls(path)

    def record(self, entry: Mapping[str, Any]) -> None:
        line = (entry_json(entry) + "\n").encode()
        if self.backlog and not self.flush():
            self._keep(line, entry, "earlier lines are still waiting")
            return
        try:
            written = os.write(self.fd, line)
        except OSError as err:
            self._keep(line, entry, err.strerror or str(err))
        else:
            if written < len(line):  # the disk filled mid-line: the rest follows later
                self._keep(line[written:], entry, "short write")

    def _keep(self, line: bytes, entry: Mapping[str, Any], error: str) -> None:
        self.write_failures += 1
        if len(self.backlog) == self.backlog.maxlen:
            self.dropped += 1
        self.backlog.append(line)
        # On stderr in full, so the record exists somewhere even if the conductor dies.
        logger.error("audit_write_failed", error=error, pending=len(self.backlog), entry=dict(entry))

    def flush(self) -> bool:
        """Write what is waiting; True once nothing is. Tried at most every RETRY_SECONDS."""
        now = time.monotonic()
        if not self.backlog:
            return True
        if now < self._retry_at:
            return False
        while self.backlog:
            head = self.backlog[0]
            try:
                written = os.write(self.fd, head)
            except OSError:
                written = 0
            if written < len(head):
                self.backlog[0] = head[written:]
                self._retry_at = now + RETRY_SECONDS
                return False
            self.backlog.popleft()
        logger.warning("audit_log_caught_up", dropped=self.dropped)
        return True

    def close(self) -> None:
        self._retry_at = 0.0
        self.flush()
        os.close(self.fd)


def _syslog_time(now: float) -> str:
    """RFC 3164's timestamp ("Jan  5 14:03:09", local time), in English whatever the locale."""
    moment = time.localtime(now)
    return f"{_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:2d} {time.strftime('%H:%M:%S', moment)}"


class SyslogSink:
    """Each entry as one syslog message whose text is the entry's JSON.

    Sent on a non-blocking datagram socket, as syslog(3) does: to a local daemon's unix
    socket (``/dev/log``) or over UDP to HOST:PORT. A syslog daemon that is gone or too
    busy to take the message makes ``record`` raise (counted, logged) rather than hold
    up the event loop: the file sink is the one that keeps what it could not write.
    """

    def __init__(self, address: str = DEFAULT_SYSLOG_ADDRESS, facility: str = DEFAULT_SYSLOG_FACILITY,
                 tag: str = DEFAULT_SYSLOG_TAG) -> None:
        if facility not in SysLogHandler.facility_names:
            raise ValueError(f"facility: must be one of {', '.join(sorted(SysLogHandler.facility_names))},"
                             f" not {facility!r}")
        if not tag or len(tag) > 32 or not all(c.isalnum() or c in "._-" for c in tag) or not tag.isascii():
            raise ValueError(f"tag: must be 1 to 32 letters, digits, '.', '_' or '-', not {tag!r}")
        self.address, self.tag = address, tag
        self.priority = SysLogHandler.facility_names[facility] * 8 + SYSLOG_INFO
        self.local = address.startswith("/")
        if self.local:
            self.target: str | tuple[Any, ...] = address
            self.family = socket.AF_UNIX
        else:
            self.family, self.target = self._resolve(address)
        self.hostname = socket.gethostname()
        self.sock: socket.socket | None = None
        try:
            self._connect()
        except OSError as err:
            raise StartupError(f"cannot reach syslog at {address}: {err.strerror or err}") from None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SyslogSink:
        """``address`` (a unix socket path or HOST:PORT for UDP), ``facility``, ``tag``."""
        read = Options(options, "syslog sink")
        address = read.string("address", DEFAULT_SYSLOG_ADDRESS)
        facility = read.string("facility", DEFAULT_SYSLOG_FACILITY)
        tag = read.string("tag", DEFAULT_SYSLOG_TAG)
        read.finish()
        return cls(address, facility, tag)

    @staticmethod
    def _resolve(address: str) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"address: must be a unix socket path or HOST:PORT, not {address!r}")
        try:
            found = socket.getaddrinfo(listen_host(address), int(port), type=socket.SOCK_DGRAM)
        except OSError as err:
            raise ValueError(f"address: cannot resolve {address!r}: {err}") from None
        family, _, _, _, target = found[0]
        return family, target

    def _connect(self) -> None:
        self._disconnect()
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.target)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def message(self, entry: Mapping[str, Any], now: float) -> bytes:
        """The datagram: ``<PRI>TIMESTAMP [HOSTNAME ]TAG[PID]: JSON`` (no hostname to a
        local daemon, which adds its own, as syslog(3) does)."""
        host = "" if self.local else f"{self.hostname} "
        return (f"<{self.priority}>{_syslog_time(now)} {host}{self.tag}[{os.getpid()}]: "
                f"{entry_json(entry)}").encode()

    def record(self, entry: Mapping[str, Any]) -> None:
        data = self.message(entry, time.time())
        try:
            if self.sock is None:
                self._connect()
            assert self.sock is not None
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            raise OSError(errno.EAGAIN, f"syslog at {self.address} is not taking messages now") from None
        except OSError as err:
            if err.errno == errno.EMSGSIZE:
                raise
            # The daemon restarted (a new socket at the same path) or the network said no:
            # connect again, once.
            self._connect()
            assert self.sock is not None
            self.sock.send(data)

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        self._disconnect()


SINKS = Kind[AuditSink](AUDIT_SINKS, "audit sink", AuditSink)


def builtin_sinks(cfg: ConductorConfig) -> dict[str, Factory]:
    """The built-in sinks, made with this config's defaults (``audit_log``, and the config
    file's directory for relative paths)."""
    base = cfg.path.parent
    return {"file": lambda options: FileSink.from_options(options, cfg.audit_log, base),
            "syslog": SyslogSink.from_options}


class AuditLog:
    """The conductor's audit: ``record`` builds each entry once and gives it to every sink."""

    def __init__(self, path: Path | None = None, sinks: Sequence[tuple[str, AuditSink]] = ()) -> None:
        """Sinks by name, in order; ``path`` puts a file sink there first."""
        named = ([("file", FileSink(path))] if path is not None else []) + list(sinks)
        self.sinks: list[tuple[str, AuditSink]] = list(zip(labels(name for name, _ in named),
                                                           (sink for _, sink in named)))
        self._files = [sink for _, sink in self.sinks if isinstance(sink, FileSink)]
        # Entries each other sink failed to take (a file sink counts its own).
        self.failures: Counter[str] = Counter()

    @classmethod
    def configured(cls, cfg: ConductorConfig, found: Iterable[metadata.EntryPoint] | None = None) -> AuditLog:
        """The sinks of ``[[audit_sinks]]``, or one ``file`` sink at ``audit_log``. A sink
        that is missing or fails to start raises the one-line start-up error; ``found``
        replaces the installed entry points (tests)."""
        tables = cfg.audit_sinks or (PluginTable("file", {}, f"{cfg.path}: audit_log"),)
        registry = Registry(SINKS, builtin_sinks(cfg), found)
        made: list[tuple[str, AuditSink]] = []
        try:
            for table in tables:
                made.append((table.name, registry.create(table.name, table.options, table.where)))
        except BaseException:
            for _, sink in made:
                sink.close()
            raise
        audit = cls(sinks=made)
        if cfg.audit_sinks:  # said once when chosen; the default goes without saying
            logger.info("audit_sinks", sinks=[name for name, _ in audit.sinks])
        return audit

    # What metrics and stats read: the file sinks' backlog, and every failure.

    @property
    def backlog(self) -> Sequence[bytes]:
        """Lines the file sinks keep until their disk takes them."""
        if len(self._files) == 1:
            return self._files[0].backlog
        return [line for sink in self._files for line in sink.backlog]

    @property
    def dropped(self) -> int:
        return sum(sink.dropped for sink in self._files)

    @property
    def write_failures(self) -> int:
        """Entries a sink could not take when they were recorded."""
        return sum(sink.write_failures for sink in self._files) + sum(self.failures.values())

    @property
    def fd(self) -> int:
        """The (first) file sink's descriptor."""
        return self._files[0].fd

    @fd.setter
    def fd(self, value: int) -> None:
        self._files[0].fd = value

    def record(self, event: str, decision: str, **fields: Any) -> None:
        entry = {"ts": round(time.time(), 6), "event": event, "decision": decision}
        entry.update({key: value for key, value in fields.items() if value is not None})
        for name, sink in self.sinks:
            try:
                sink.record(entry)
            except Exception as err:
                self._failed(name, err, entry)

    def _failed(self, name: str, err: Exception, entry: Mapping[str, Any] | None = None) -> None:
        self.failures[name] += 1
        # Rate-limited: a sink that is down fails for every entry.
        log.throttled(logger, "error", "audit_sink_failed", key=name, sink=name,
                      error=f"{type(err).__name__}: {err}", failures=self.failures[name],
                      **({"entry": dict(entry)} if entry is not None else {}))

    def flush(self) -> bool:
        """Write what is waiting; True once no sink holds anything back."""
        done = True
        for name, sink in self.sinks:
            try:
                done = sink.flush() and done
            except Exception as err:
                self._failed(name, err)
                done = False
        return done

    def close(self) -> None:
        for name, sink in self.sinks:
            try:
                sink.flush()
                sink.close()
            except Exception as err:
                logger.error("audit_sink_close_failed", sink=name, error=f"{type(err).__name__}: {err}")
