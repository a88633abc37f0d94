"""Plugins: Python entry points in three named groups, chosen by name in the config.

A site adds an audit sink, a notifier or a score interface by installing a Python
distribution that declares an entry point in one of these groups, never by naming code
in a config file: what can run inside a daemon is what the host's package manager put
there. The built-ins are listed with the plugins and chosen by the same names.

==========================  ==========================================  ==================
group                       what it adds                                chosen by
==========================  ==========================================  ==================
``orchestra.audit_sinks``   where audit entries go (``AuditSink``,      conductor.toml
                            conductor/audit.py)                         ``[[audit_sinks]]``
``orchestra.notifiers``     who is told when a job or workflow ends     conductor.toml
                            (``Notifier``, conductor/notify.py)         ``[[notifiers]]``
``orchestra.interfaces``    how a score gets its params and returns     a score's .conf
                            its response (``Interface``,                ``interface NAME``
                            player/interfaces.py)
==========================  ==========================================  ==================

An entry point names a factory, a class or a function, called with one argument: its
options, a dict (the config table without its ``name`` key; ``{}`` for interfaces). It
returns an object with every member of the group's Protocol. Options it does not know or
cannot use are its to refuse, with ValueError (or ConfigError) and a message.

Every problem is found at start-up and is one line (``daemon_failed``):

- a name no built-in or entry point has: ConfigError listing the names there are (2);
- options the factory refuses (ValueError, ConfigError): ConfigError naming the config
  table (2);
- an entry point taking a built-in's name, or two distributions one name: StartupError
  naming both (1);
- an entry point that cannot be imported, a factory that fails otherwise, an object
  missing a member of the Protocol: StartupError naming the entry point, its distribution
  and the exception's first line (1).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from orchestra.cli import one_line
from orchestra.errors import ConfigError, OrchestraError, StartupError

AUDIT_SINKS = "orchestra.audit_sinks"
NOTIFIERS = "orchestra.notifiers"
INTERFACES = "orchestra.interfaces"

T = TypeVar("T")
# What an entry point names: called with the options, returns the plugin object.
Factory = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Kind(Generic[T]):
    """One group: its entry-point name, what messages call one of it, and its Protocol
    (whose methods and annotated attributes every object must have)."""

    group: str
    what: str
    protocol: type


@dataclass(frozen=True)
class Source:
    """Where one name comes from: a built-in factory or an entry point."""

    name: str
    builtin: Factory | None = None
    entry_point: metadata.EntryPoint | None = None

    def describe(self) -> str:
        """How messages name it: ``built-in``, or the entry point and its distribution."""
        point = self.entry_point
        if point is None:
            return "built-in"
        dist = getattr(point, "dist", None)  # None for an entry point made by hand
        owner = f"distribution {dist.name} {dist.version}" if dist is not None else "an unknown distribution"
        return f"entry point {point.group}:{point.name} = {point.value} from {owner}"


def _same(one: metadata.EntryPoint, other: metadata.EntryPoint) -> bool:
    """The same entry point seen twice (a distribution reachable by two sys.path entries)."""
    first, second = getattr(one, "dist", None), getattr(other, "dist", None)
    return one.value == other.value and (first.name if first else None) == (second.name if second else None)


def required_members(protocol: type) -> tuple[list[str], list[tuple[str, bool]]]:
    """The Protocol's attributes, and its methods with whether each must be a coroutine
    function: read from the class itself, so the check cannot drift from the Protocol."""
    attributes = [name for name in getattr(protocol, "__annotations__", {}) if not name.startswith("_")]
    methods = [(name, inspect.iscoroutinefunction(value)) for name, value in vars(protocol).items()
               if not name.startswith("_") and callable(value)]
    return attributes, methods


def missing_members(obj: object, protocol: type) -> list[str]:
    """What ``obj`` lacks of ``protocol`` ([] if nothing)."""
    attributes, methods = required_members(protocol)
    missing = [f"attribute {name}" for name in attributes if not hasattr(obj, name)]
    for name, asynchronous in methods:
        member = getattr(obj, name, None)
        if not callable(member):
            missing.append(f"method {name}()")
        elif asynchronous and not inspect.iscoroutinefunction(member):
            missing.append(f"async method {name}() (it is not a coroutine function)")
    return missing


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {one_line(str(err))}" if str(err) else type(err).__name__


class Registry(Generic[T]):
    """The built-ins and the installed entry points of one group, by name.

    Building it lists the entry points without importing them, so an installed plugin
    that is never chosen costs nothing and cannot break a start; ``found`` replaces the
    installed ones (tests).
    """

    def __init__(self, kind: Kind[T], builtins: Mapping[str, Factory],
                 found: Iterable[metadata.EntryPoint] | None = None) -> None:
        self.kind = kind
        self.sources: dict[str, Source] = {name: Source(name, builtin=factory) for name, factory in builtins.items()}
        for point in metadata.entry_points(group=kind.group) if found is None else found:
            have = self.sources.get(point.name)
            new = Source(point.name, entry_point=point)
            if have is None:
                self.sources[point.name] = new
            elif have.entry_point is None:
                raise StartupError(f"{kind.what} {point.name!r} ({new.describe()}) takes the name of the built-in"
                                   f" {kind.what} {point.name!r}; rename or uninstall it")
            elif not _same(have.entry_point, point):
                raise StartupError(f"{kind.what} {point.name!r} is defined twice: {have.describe()}, and"
                                   f" {new.describe()}; uninstall one of them")

    def names(self) -> list[str]:
        return sorted(self.sources)

    def _where(self, where: str) -> str:
        return f"{where}: " if where else ""

    def factory(self, name: str, where: str = "") -> Factory:
        """The factory for ``name``, imported now. Raises ConfigError (no such name) or
        StartupError (it cannot be imported)."""
        source = self.sources.get(name)
        if source is None:
            raise ConfigError(f"{self._where(where)}unknown {self.kind.what} {name!r}; available:"
                              f" {', '.join(self.names())}")
        if source.builtin is not None:
            return source.builtin
        assert source.entry_point is not None
        try:
            loaded = source.entry_point.load()
        except Exception as err:
            raise StartupError(f"{self._where(where)}{self.kind.what} {name!r} ({source.describe()})"
                               f" cannot be loaded: {_error_text(err)}") from None
        if not callable(loaded):
            raise StartupError(f"{self._where(where)}{self.kind.what} {name!r} ({source.describe()})"
                               f" is not a class or function")
        return cast(Factory, loaded)

    def create(self, name: str, options: Mapping[str, Any], where: str = "") -> T:
        """A new ``name`` made with ``options``, checked to have every member of the Protocol."""
        factory = self.factory(name, where)
        source = self.sources[name]
        try:
            made = factory(dict(options))
        except (ConfigError, ValueError) as err:
            raise ConfigError(f"{self._where(where)}{one_line(str(err)) or type(err).__name__}") from None
        except OrchestraError as err:  # a built-in's own words: a file it cannot open
            raise StartupError(f"{self._where(where)}{one_line(str(err))}") from None
        except Exception as err:
            raise StartupError(f"{self._where(where)}{self.kind.what} {name!r} ({source.describe()})"
                               f" failed to start: {_error_text(err)}") from None
        missing = missing_members(made, self.kind.protocol)
        if missing:
            raise StartupError(f"{self._where(where)}{self.kind.what} {name!r} ({source.describe()})"
                               f" is incomplete: it has no {', no '.join(missing)}")
        return cast(T, made)


_MISSING = object()


class Options:
    """Typed reads of a plugin's options, for the built-ins (and any plugin that wants
    them). A value of the wrong type, and in :meth:`finish` an option nobody read, raise
    ValueError naming the option: the registry reports it with the config table, so a
    misspelt ``timout`` stops the start instead of silently meaning the default."""

    def __init__(self, options: Mapping[str, Any], what: str) -> None:
        self.options, self.what = options, what
        self.used: set[str] = set()

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        self.used.add(key)
        if key not in self.options:
            if default is _MISSING:
                raise ValueError(f"{key}: is required")
            return default
        value = self.options[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise ValueError(f"{key}: must be {what}, not {value!r}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        value: str = self._get(key, _MISSING if default is None else default, (str,), "a string")
        return value

    def path(self, key: str, base: Path, default: Path | None = None) -> Path | None:
        """A path; a relative one is taken from ``base`` (the config file's directory)."""
        raw = self._get(key, None, (str,), "a path string")
        if raw is None:
            return default
        if not raw:
            raise ValueError(f"{key}: must not be empty")
        path = Path(raw).expanduser()
        return path if path.is_absolute() else base / path

    def number(self, key: str, default: float, minimum: float, maximum: float) -> float:
        value = float(self._get(key, default, (int, float), "a number"))
        if not minimum <= value <= maximum:  # also refuses nan
            raise ValueError(f"{key}: must be from {minimum:g} to {maximum:g}, not {value:g}")
        return value

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value: int = self._get(key, default, (int,), "a whole number")
        if not minimum <= value <= maximum:
            raise ValueError(f"{key}: must be from {minimum} to {maximum}, not {value}")
        return value

    def strings(self, key: str, default: tuple[str, ...], allowed: Iterable[str] = ()) -> tuple[str, ...]:
        value = self._get(key, list(default), (list,), "a list of strings")
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"{key}: must be a list of strings, not {value!r}")
        choices = set(allowed)
        wrong = [item for item in value if choices and item not in choices]
        if wrong:
            raise ValueError(f"{key}: {wrong[0]!r} is not one of {', '.join(sorted(choices))}")
        return tuple(value)

    def table(self, key: str) -> dict[str, str]:
        """A table of strings (``{}`` if absent)."""
        value = self._get(key, {}, (dict,), "a table of strings")
        wrong = [name for name, item in value.items() if not isinstance(item, str)]
        if wrong:
            raise ValueError(f"{key}.{wrong[0]}: must be a string, not {value[wrong[0]]!r}")
        return dict(value)

    def finish(self) -> None:
        """Refuse every option that was not read."""
        unknown = sorted(set(self.options) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used)) or "no options"
            raise ValueError(f"{unknown[0]}: unknown option (the {self.what} takes {known})")


def labels(names: Iterable[str]) -> list[str]:
    """A label for each of several plugins, in order: its name, with ``#2``, ``#3`` ...
    for a name met again, so logs and counters tell two webhooks apart."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result
