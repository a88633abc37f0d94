"""structlog setup shared by every command: JSON lines on stderr unless stderr is a TTY.

The daemons also capture their own file descriptor 2: gRPC core (C++) writes its log
lines there directly, and so would anything else below Python. A thread reads them back
and re-emits each as one structured event, so every line a daemon writes to stderr is
one JSON object. Repeated lines (a flood of refused handshakes, ``accept`` failures when
descriptors run out) are rate-limited, with a count of what was left out.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from typing import Any

import structlog

LEVELS = ("debug", "info", "warning", "error", "critical")
# A repeated event is written at most BURST times per WINDOW seconds, then once per
# window with the number left out.
THROTTLE_WINDOW = 10.0
THROTTLE_BURST = 5
PIPE_BYTES = 1 << 20  # the capture pipe's buffer

# How many events of each kind were seen (written or not): the stats line reports them.
counters: Counter[str] = Counter()

# Refused TLS handshakes by kind, for the conductor's metrics. gRPC's reasons are free
# text that a client partly chooses (what it sends instead of TLS): each is mapped to one
# of a few fixed kinds, so nothing from outside becomes a label value. Every kind is
# there from the start, so the dict never changes size while another thread reads it.
HANDSHAKE_REFUSALS = ("unknown_ca", "expired", "not_yet_valid", "revoked", "no_certificate", "bad_usage",
                      "not_tls", "incomplete", "other")
handshake_refusals: Counter[str] = Counter(dict.fromkeys(HANDSHAKE_REFUSALS, 0))
# Substrings of BoringSSL's and gRPC's reasons (with and without the handshaker trace),
# tried in order.
_REFUSAL_KINDS = (
    ("unable to get local issuer certificate", "unknown_ca"),
    ("unable to get issuer certificate", "unknown_ca"),
    ("self signed certificate", "unknown_ca"),
    ("self-signed certificate", "unknown_ca"),
    ("certificate signature failure", "unknown_ca"),
    ("certificate has expired", "expired"),
    ("certificate is not yet valid", "not_yet_valid"),
    ("certificate revoked", "revoked"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_certificate"),
    ("unsupported certificate purpose", "bad_usage"),
    ("WRONG_VERSION_NUMBER", "not_tls"),
    ("HTTP_REQUEST", "not_tls"),
    ("HTTPS_PROXY_REQUEST", "not_tls"),
    ("UNKNOWN_PROTOCOL", "not_tls"),
    # Not finished: the handshake_timeout passed, or the client went away.
    ("Handshake read failed", "incomplete"),
    ("Endpoint closing", "incomplete"),
    ("Socket closed", "incomplete"),
    ("timed out", "incomplete"),
)


def handshake_refusal(reason: str) -> str:
    """The kind of a refused handshake (one of HANDSHAKE_REFUSALS) from gRPC's reason."""
    for text, kind in _REFUSAL_KINDS:
        if text in reason:
            return kind
    return "other"


class Throttle:
    """Decides whether a repeated event is written now; thread-safe."""

    def __init__(self, window: float = THROTTLE_WINDOW, burst: int = THROTTLE_BURST) -> None:
        self.window, self.burst = window, burst
        self._seen: dict[object, tuple[float, int, int]] = {}  # key -> (window start, written, left out)
        self._lock = threading.Lock()

    def allow(self, key: object, now: float | None = None) -> int | None:
        """None: leave this one out. Otherwise write it, noting the returned number of
        events with this key left out since the last one written."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start, written, left_out = self._seen.get(key, (now, 0, 0))
            if now - start >= self.window:
                start, written = now, 0
            if written < self.burst:
                self._seen[key] = (start, written + 1, 0)
                if len(self._seen) > 10_000:  # keys come from outside: bound the memory
                    self._seen.clear()
                return left_out
            self._seen[key] = (start, written, left_out + 1)
            return None


throttle = Throttle()


def throttled(logger: Any, level: str, event: str, key: object = None, **fields: Any) -> None:
    """Log ``event`` unless the same (event, key) was logged too often just now."""
    counters[event] += 1
    left_out = throttle.allow((event, key))
    if left_out is None:
        return
    if left_out:
        fields["left_out"] = left_out
    getattr(logger, level)(event, **fields)


class _LineSink:
    """Each log line in one write(2) on a descriptor: lines from several threads never mix."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(self.fd, data)
            except InterruptedError:
                continue
            except OSError:
                return 0  # nowhere left to log to; never crash the daemon for it
            data = data[written:]
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return os.isatty(self.fd)


def setup(level: str = "info", capture_stderr: bool = False) -> None:
    """Configure structlog once per process; events are short snake_case verbs.

    With ``capture_stderr`` (the daemons), descriptor 2 becomes a pipe read by a thread
    that turns every line into an event; the log itself goes to the original stderr.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    tty = sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if tty else structlog.processors.JSONRenderer(sort_keys=False))
    sink = _LineSink(_capture_stderr() if capture_stderr else sys.stderr.fileno())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sink),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Python-side grpc and asyncio messages: the same JSON, one line each, traceback included.
    handler = logging.StreamHandler(sink)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


# ---- descriptor 2 ----------------------------------------------------------------------

_captured: int | None = None
_drainer: threading.Thread | None = None


def _capture_stderr() -> int:
    """Point descriptor 2 at a pipe drained by a thread; return a copy of the real stderr."""
    global _captured, _drainer
    if _captured is not None:
        return _captured
    original = os.dup(2)
    os.set_inheritable(original, False)
    read_end, write_end = os.pipe()
    try:  # room for a burst (a reconnect storm's trace) while the reader waits for the GIL
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # the default 64 KiB still works, with less slack
    sys.stderr.flush()
    os.dup2(write_end, 2)  # descriptor 2 stays inheritable: a child's stderr is captured too
    os.close(write_end)
    _captured = original
    _drainer = threading.Thread(target=_drain, args=(read_end,), name="stderr-reader", daemon=True)
    _drainer.start()
    atexit.register(release_stderr)
    return original


def release_stderr(timeout: float = 2.0) -> None:
    """Give descriptor 2 back and let the reader finish what is in the pipe: the last
    words of a daemon (the one-line reason it could not start) are not lost at exit."""
    if _captured is None or _drainer is None:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_captured, 2)  # the pipe's last writer is gone: the reader sees its end
    _drainer.join(timeout)


# gRPC core's lines: "E1123 23:49:15.656609    9480 ssl_transport_security.cc:2563] message"
_CORE_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([\w./-]+:\d+)\] ?(.*)$")
_CORE_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}
_CORE_START = re.compile(rb"[IWEF]\d{4} ")  # how each gRPC core line begins
# The lines gRPC writes after a status it logs: its source location trace, the rest of
# the message, blank lines.
_CONTINUATION = re.compile(rb"(=== Source Location Trace: ===|[\w./-]+\.(?:cc|h):\d+|\s.*|)\s*$")
_PEER = re.compile(r"endpoint_peer_address=([^,}\s]+)")

# Whether gRPC's handshaker trace is on: the conductor turns it on (conductor/main.py).
handshake_trace = False


def _reason(error: str) -> str:
    """The useful part of a handshake error: the TLS reason, without gRPC's decoration."""
    error = error.split(" === ")[0].split(" shutdown=")[0].strip()
    error = re.sub(r"^[A-Z_]+: ", "", error)  # the status code name
    if "SSL_ERROR_SSL: " in error:
        error = error.split("SSL_ERROR_SSL: ", 1)[1]
    error = re.sub(r"error:[0-9a-f]+:SSL routines:OPENSSL_internal:", "", error)
    return error.removesuffix(": OK")[:300]


def _drain(fd: int) -> None:
    logger = get("stderr")
    pending = b""
    dropping = False
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            return
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > 65536:  # a line without end: emit what there is
            lines, pending = [*lines, pending], b""
        kept = []
        for line in lines:
            if _CORE_START.match(line):
                dropping = _trace_noise(line)
            elif dropping and not _CONTINUATION.match(line):
                dropping = False
            if not dropping:  # a dropped line's continuation lines go with it
                kept.append(line.decode("utf-8", "replace"))
        for group in _groups(kept):
            try:
                emit_line(logger, group)
            except Exception:  # noqa: BLE001 - this thread must keep draining, or gRPC blocks on fd 2
                if _captured is not None:
                    os.write(_captured, ("\n".join(group) + "\n").encode("utf-8", "replace"))


def _trace_noise(line: bytes) -> bool:
    """The handshaker trace's lines for steps that went well: most of what it writes,
    dropped before any decoding or matching."""
    return (b"handshaker.cc" in line and b"error=OK" in line) or b"channel_trace.h" in line or \
        b"adding handshaker" in line


def _groups(lines: list[str]) -> list[list[str]]:
    """One group per gRPC core line with the lines that continue it; other lines that
    arrived together (a Python traceback) form one group."""
    groups: list[list[str]] = []
    for line in lines:
        if not line.strip():
            continue
        if _CORE_LINE.match(line) or not groups or (
                _CORE_LINE.match(groups[-1][0]) is None and line.startswith("Traceback")):
            groups.append([line])
        else:
            groups[-1].append(line)
    return groups


def emit_line(logger: Any, group: list[str]) -> None:
    """One structured event for one group of raw stderr lines."""
    match = _CORE_LINE.match(group[0])
    if match is None:
        # Written by something that does not log (a last error, a library's warning).
        throttled(logger, "error", "stderr", key=group[0][:200], message="\n".join(group)[:8000])
        return
    level, source, text = _CORE_LEVELS[match.group(1)], match.group(2), match.group(3)
    message = " ".join([text, *(line.strip() for line in group[1:])])
    if text.startswith("Handshake failed with error"):
        # ssl_transport_security: a client refused (no, expired, unknown or wrong cert).
        # With the handshaker trace on, the next line says it again with the peer.
        if not handshake_trace:
            reason = text.removeprefix("Handshake failed with error").strip()
            handshake_refusals[handshake_refusal(reason)] += 1
            throttled(logger, "warning", "tls_handshake_failed", key=reason, reason=reason)
        return
    if text.startswith("CallNextHandshakerLocked: error=") and not text.startswith("CallNextHandshakerLocked: error=OK"):
        # The handshaker trace's line for a failed handshake, with the peer's address.
        peer = _PEER.search(message)
        reason = _reason(message.removeprefix("CallNextHandshakerLocked: error="))
        handshake_refusals[handshake_refusal(reason)] += 1
        throttled(logger, "warning", "tls_handshake_failed", key=reason, peer=peer.group(1) if peer else None,
                  reason=reason)
        return
    if "handshaker.cc" in source or "channel_trace" in source:
        return  # the rest of the handshaker trace is noise
    throttled(logger, level, "grpc_core", key=(source, text[:120]), source=source, message=message[:8000])
