"""Named groups of hosts (``@name``) and drained hosts. Pure logic.

Groups are conductor.toml's ``[groups]`` (re-read on SIGHUP, like the policy that uses
the same names): each member is a certname or a glob, matched against the players file.
``@web`` in any command means the players the group matches now; a group that matches no
player is an error rather than a job with no targets.

A drain names a host or a group. A drained host gets no new task: its all-of tasks wait,
a one-of task picks another target, and what already runs there finishes. A drained
group drains whichever players it matches at the time, so a host added to the group
later is drained too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from conductor.store.records import Drain
from orchestra.errors import ValidationError
from orchestra.params import check_targets, is_group

GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class Clusters:
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def members(self, group: str, roster: Iterable[str]) -> list[str]:
        """The players (sorted) the group's members name or match; raises for an unknown group."""
        patterns = self.groups.get(group)
        if patterns is None:
            raise ValidationError(f"no such group @{group} (conductor.toml [groups])")
        names = set(roster)
        found: set[str] = set()
        for pattern in patterns:
            if GLOB_CHARACTERS & set(pattern):
                found.update(name for name in names if fnmatchcase(name, pattern))
            elif pattern in names:
                found.add(pattern)
        return sorted(found)

    def judged(self, targets: Iterable[str], roster: Iterable[str]) -> list[str]:
        """Targets as the policy is to judge them when deciding who may see or touch work
        submitted earlier with @groups (a workflow's steps, a schedule's runs): each group
        by its name and by the players it covers now (none, if it is gone), so a rule
        about a host applies whether the work names the host or a group holding it."""
        judged: list[str] = []
        for target in targets:
            judged.append(target)
            if is_group(target):
                try:
                    judged.extend(self.members(target[1:], roster))
                except ValidationError:
                    pass
        return list(dict.fromkeys(judged))

    def expand(self, targets: Iterable[str], roster: Iterable[str]) -> list[str]:
        """Targets with each @group replaced by its players, repeats dropped, in the order
        given. A group that matches no player is refused."""
        roster = frozenset(roster)
        hosts: list[str] = []
        for target in targets:
            if is_group(target):
                members = self.members(target[1:], roster)
                if not members:
                    raise ValidationError(f"group {target} matches no player in the players file")
                hosts.extend(members)
            else:
                hosts.append(target)
        return check_targets(hosts)

    def drained(self, drains: Iterable[Drain], roster: Iterable[str]) -> dict[str, Drain]:
        """Each drained player with the drain that covers it (its own before a group's).
        A drain of a group that no longer exists drains nothing until it exists again."""
        roster = frozenset(roster)
        covered: dict[str, Drain] = {}
        for drain in sorted(drains, key=lambda d: is_group(d.name)):
            for host in self.covers(drain.name, roster):
                covered.setdefault(host, drain)
        return covered

    def covers(self, name: str, roster: Iterable[str]) -> list[str]:
        """The players a drain of ``name`` (a host, or an @group) covers now: none for a
        group that does not exist (any more)."""
        if not is_group(name):
            return [name]
        return self.members(name[1:], roster) if name[1:] in self.groups else []

    def check_names(self, names: Iterable[str], known: Iterable[str]) -> list[str]:
        """Names a drain may take: players (in the players file or seen before) and groups
        that exist. Raises naming the first unknown one."""
        checked = check_targets(names)
        known = frozenset(known)
        for name in checked:
            if is_group(name):
                if name[1:] not in self.groups:
                    raise ValidationError(f"no such group {name} (conductor.toml [groups])")
            elif name not in known:
                raise ValidationError(f"not in the players file: {name}")
        return checked
