"""Score interfaces: how a score receives its params and hands back its response.

A score's .conf names one (``interface NAME``, default ``env``):

``env``   params as ``ORC_<KEY>`` variables; the response is the KEY=VALUE lines the
          score writes to the file named by ``ORC_RESPONSE_FILE``.
``pipe``  params as ``ORC_<KEY>`` variables; the response is the KEY=VALUE lines of its
          stdout.
``json``  params as one JSON object on stdin, one line: ``{"KEY": "value", ...}``, the
          keys as validated (upper case, no ``ORC_`` prefix), every value a string; they
          are not in the environment. The response is the score's stdout, which must be
          one JSON object: a string value is taken as it is, any other value as its
          compact JSON text (``3``, ``true``, ``null``, ``[1,2]``). A score that exits 0
          with anything else on stdout (nothing, a log line, a cut-off object) ends
          ``failed``, saying why; its stdout is kept as usual.

Whatever the interface, the reserved variables (``ORC_JOB_ID``, ``ORC_TASK_ID``,
``ORC_ATTEMPT``, ``ORC_SCORE``, ``ORC_PLAYER``, ``ORC_REQUESTER``,
``ORC_RESPONSE_FILE``) are in the environment, and at most ``response_max_bytes`` of the
response are read.

More can be installed as entry points of the group ``orchestra.interfaces``
(orchestra/plugins.py); the player loads every installed one at start, so a broken one
stops it there rather than failing its scores later. An interface only turns params into
stdin and output into a response: the runner keeps the environment (an interface cannot
add variables to it, so the ``ORC_`` prefix stays impossible to bypass), spawns the score
and reads the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestra import log
from orchestra.errors import StartupError
from orchestra.plugins import INTERFACES, Factory, Kind, Registry

logger = log.get("player")
# Where an interface's response is read from: the score's stdout, or the file named by
# ORC_RESPONSE_FILE.
RESPONSE_SOURCES = ("stdout", "response_file")
# The interfaces every player had before they could be installed: named first in messages.
CLASSIC = ("env", "pipe")


@dataclass(frozen=True)
class Response:
    """What a score's output says: its pairs, whether they were cut at the size limit,
    and, when the output is not a response at all, why (one line): a score that exited 0
    then ends ``failed`` with that reason."""

    pairs: dict[str, str] = field(default_factory=dict)
    truncated: bool = False
    error: str = ""


class Interface(Protocol):
    """How a score gets its params and returns its response (entry-point group
    ``orchestra.interfaces``; the factory is called with ``{}``).

    ``params_in_environment``: whether the params are also set as ``ORC_<KEY>``
    variables. ``response_from``: "stdout" or "response_file". ``stdin`` returns what the
    score reads on its stdin (None: nothing, /dev/null), from the validated params (keys
    upper case, without ``ORC_``). ``parse`` turns the first ``response_max_bytes`` of
    the response's source into a Response; ``truncated`` says there was more. Both are
    called on the player's event loop: quick, pure functions.
    """

    params_in_environment: bool
    response_from: str

    def stdin(self, params: Mapping[str, str]) -> bytes | None: ...

    def parse(self, data: bytes, truncated: bool) -> Response: ...


def parse_pairs(data: bytes, truncated: bool) -> Response:
    """KEY=VALUE lines (env, pipe): a line without ``=`` or with an empty key is not a
    pair; when the data was cut, its last line may be cut in half and is left out."""
    lines = data.decode("utf-8", "replace").splitlines()
    if truncated and lines:
        lines = lines[:-1]
    pairs: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = value
    return Response(pairs, truncated)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def response_text(value: object) -> str:
    """A response value as text: a string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_json_object(data: bytes, truncated: bool) -> Response:
    """The json interface's response: stdout must be one JSON object (see the module)."""
    if truncated:
        return Response(truncated=True, error=f"stdout is larger than response_max_bytes ({len(data)} bytes)"
                                              f" and cannot be read as one JSON object")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Response(error=f"stdout is not UTF-8 (byte {err.start}), so not a JSON object")
    if not text.strip():
        return Response(error="stdout is empty: the json interface needs one JSON object")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
        if not isinstance(value, dict):
            return Response(error=f"stdout is a JSON {_json_type(value)}, not an object")
        return Response({key: response_text(item) for key, item in value.items()})
    except json.JSONDecodeError as err:
        return Response(error=f"stdout is not a JSON object: {err.msg} at line {err.lineno} column {err.colno}")
    except ValueError as err:  # NaN, Infinity, an integer of more than 4,300 digits
        return Response(error=f"stdout is not a JSON object: {err}")
    except RecursionError:
        return Response(error="stdout is not a JSON object this player can read: it is nested too deeply")


class _Builtin:
    """A built-in interface takes no options."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        if options:
            raise ValueError(f"{sorted(options)[0]}: unknown option (interfaces take none)")


class EnvInterface(_Builtin):
    params_in_environment = True
    response_from = "response_file"

    def stdin(self, params: Mapping[str, str]) -> bytes | None:
        return None

    def parse(self, data: bytes, truncated: bool) -> Response:
        return parse_pairs(data, truncated)


class PipeInterface(EnvInterface):
    response_from = "stdout"


class JsonInterface(_Builtin):
    params_in_environment = False
    response_from = "stdout"

    def stdin(self, params: Mapping[str, str]) -> bytes | None:
        """One line: the params as a JSON object, keys sorted (a trailing newline, so
        that ``read`` in a shell script gets the whole line)."""
        return (json.dumps(dict(params), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
                + "\n").encode()

    def parse(self, data: bytes, truncated: bool) -> Response:
        return parse_json_object(data, truncated)


INTERFACE_KIND = Kind[Interface](INTERFACES, "interface", Interface)
BUILTINS: dict[str, Factory] = {"env": EnvInterface, "pipe": PipeInterface, "json": JsonInterface}

_registry: Registry[Interface] | None = None
_loaded: dict[str, Interface] | None = None


def registry() -> Registry[Interface]:
    """The built-ins and the installed entry points (listed once, not imported)."""
    global _registry
    if _registry is None:
        _registry = Registry(INTERFACE_KIND, BUILTINS)
    return _registry


def load_all() -> dict[str, Interface]:
    """Import and make every interface, once: the player's start-up step. Raises the
    one-line StartupError of the first that cannot be loaded or is not an interface."""
    global _loaded
    if _loaded is None:
        found = registry()
        loaded: dict[str, Interface] = {}
        for name in found.names():
            interface = found.create(name, {})
            if interface.response_from not in RESPONSE_SOURCES or not isinstance(interface.params_in_environment, bool):
                raise StartupError(f"interface {name!r} ({found.sources[name].describe()}) is incomplete:"
                                   f" response_from must be {' or '.join(RESPONSE_SOURCES)}, and"
                                   f" params_in_environment true or false")
            loaded[name] = interface
        _loaded = loaded
        logger.debug("interfaces_loaded", interfaces=sorted(loaded))
    return _loaded


def names() -> list[str]:
    """Every interface a .conf may name: those loaded, or before the start-up step (a
    test, a tool) those installed."""
    return sorted(_loaded) if _loaded is not None else registry().names()


def get(name: str) -> Interface:
    """The interface ``name``; KeyError if there is none."""
    return load_all()[name]


def unknown(name: str) -> str:
    """Why a .conf may not name this interface ("" if it may). Names are lower case;
    a .conf may spell them in any case."""
    known = names()
    if name.lower() in known:
        return ""
    others = [other for other in known if other not in CLASSIC]
    more = f", or another installed interface ({', '.join(others)})" if others else ""
    return f"interface must be {' or '.join(CLASSIC)}{more}, not {name!r}"
