"""Score inventory on the wire: parameter declarations to and from protobuf."""

from __future__ import annotations

from collections.abc import Iterable

from orchestra.params import ParamDecl, ScoreDecls
from orchestra.wire import common_pb2

PROTOCOL_VERSION = 1


def decls_to_wire(decls: ScoreDecls) -> list[common_pb2.ParamDecl]:
    return [
        common_pb2.ParamDecl(name=d.name, required=d.required, pattern=d.pattern,
                             choices=list(d.choices), default=d.default or "",
                             has_default=d.default is not None, secret=d.secret)
        for d in decls.params
    ]


def decls_from_wire(params: Iterable[common_pb2.ParamDecl]) -> ScoreDecls:
    return ScoreDecls(tuple(
        ParamDecl(name=p.name, required=p.required, pattern=p.pattern, choices=tuple(p.choices),
                  default=p.default if p.has_default else None, secret=p.secret)
        for p in params
    ))
