"""Several conductors in the config files: ``conductor`` as a list in player.toml and
audience.toml, and conductor.toml's [store] table."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.config import (
    MAX_CONDUCTORS, StoreConfig, load_audience, load_conductor, load_player,
)
from orchestra.errors import ConfigError
from orchestra.leader_hint import (
    LEADER_METADATA, PLAYER_LINK, is_refusal, leader_hint, refusal_details, refusal_metadata,
)
from orchestra.wire import player_pb2

TLS = '\n[tls]\nca = "ca.pem"\ncert = "cert.pem"\nkey = "key.pem"\n'
SECRET = "s3cr3t-pa55word"
DSN = f"postgresql://orchestra:{SECRET}@db.example.com/orchestra?sslmode=verify-full"


def player_file(tmp_path: Path, conductor: str, extra: str = "") -> Path:
    path = tmp_path / "player.toml"
    path.write_text(f"conductor = {conductor}\n{extra}{TLS}")
    return path


def audience_file(tmp_path: Path, conductor: str, extra: str = "") -> Path:
    path = tmp_path / "audience.toml"
    path.write_text(f"conductor = {conductor}\n{extra}{TLS}")
    return path


def conductor_file(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "conductor.toml"
    path.write_text(f'listen = "127.0.0.1:2258"\n[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n{store}')
    return path


def one_line_error(call: object) -> str:
    with pytest.raises(ConfigError) as caught:
        call()  # type: ignore[operator]
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---- player.toml and audience.toml: conductor --------------------------------------------------

def test_a_single_conductor_string_works_as_before(tmp_path: Path) -> None:
    cfg = load_player(player_file(tmp_path, '"c1.example.com:2258"'))
    assert cfg.conductor == "c1.example.com:2258" and cfg.conductor_name == "c1.example.com"
    assert cfg.conductors == ("c1.example.com:2258",)
    assert cfg.targets() == (("c1.example.com:2258", "c1.example.com"),)


def test_a_list_of_conductors_is_dialled_in_order_each_checked_against_its_own_host(tmp_path: Path) -> None:
    cfg = load_player(player_file(tmp_path, '["c1.example.com:2258", "c2.example.com:2259", "[::1]:2258"]'))
    assert cfg.conductors == ("c1.example.com:2258", "c2.example.com:2259", "[::1]:2258")
    assert cfg.targets() == (("c1.example.com:2258", "c1.example.com"),
                             ("c2.example.com:2259", "c2.example.com"), ("[::1]:2258", "::1"))


def test_conductor_name_applies_to_every_listed_address(tmp_path: Path) -> None:
    cfg = load_player(player_file(tmp_path, '["10.0.0.1:2258", "10.0.0.2:2258"]',
                                  'conductor_name = "conductor.example.com"\n'))
    assert cfg.targets() == (("10.0.0.1:2258", "conductor.example.com"),
                             ("10.0.0.2:2258", "conductor.example.com"))
    assert cfg.conductor_name == "conductor.example.com"


def test_a_list_of_one_is_the_same_as_the_string(tmp_path: Path) -> None:
    listed = load_player(player_file(tmp_path, '["c1.example.com:2258"]'))
    assert listed.conductor == "c1.example.com:2258" and listed.conductor_name == "c1.example.com"


@pytest.mark.parametrize("value, problem", [
    ("[]", "must list 1 to 16 addresses, not 0"),
    ('["c1.example.com:2258", "c1.example.com:2258"]', "lists 'c1.example.com:2258' twice"),
    ('["c1.example.com:2258", "C1.EXAMPLE.COM:2258"]', "twice"),
    ('["c1.example.com:2258", "c2.example.com"]', "must be HOST:PORT, not 'c2.example.com'"),
    ('["c1.example.com:2258", "c2.example.com:99999"]', "must be HOST:PORT"),
    ('["a,b:2258"]', "must be HOST:PORT, not 'a,b:2258'"),
    ('"c1.example.com:2258,c2.example.com:2258"', "must be HOST:PORT"),
    ('["c1.example.com:2258", 2258]', "must list HOST:PORT strings, not 2258"),
    ("2258", "must be HOST:PORT or a list of them, not 2258"),
    ('""', "must be HOST:PORT, not ''"),
])
def test_a_bad_conductor_list_names_the_file_and_key(tmp_path: Path, value: str, problem: str) -> None:
    path = player_file(tmp_path, value)
    message = one_line_error(lambda: load_player(path))
    assert message.startswith(f"{path}: conductor: ") and problem in message


def test_more_than_sixteen_conductors_are_refused(tmp_path: Path) -> None:
    many = ", ".join(f'"c{n}.example.com:2258"' for n in range(MAX_CONDUCTORS + 1))
    path = player_file(tmp_path, f"[{many}]")
    assert "must list 1 to 16 addresses, not 17" in one_line_error(lambda: load_player(path))
    sixteen = ", ".join(f'"c{n}.example.com:2258"' for n in range(MAX_CONDUCTORS))
    assert len(load_player(player_file(tmp_path, f"[{sixteen}]")).conductors) == MAX_CONDUCTORS


def test_the_audience_takes_a_list_too_and_no_conductor_is_the_local_socket(tmp_path: Path) -> None:
    cfg = load_audience(audience_file(tmp_path, '["c1.example.com:2258", "c2.example.com:2258"]'), explicit=True)
    assert cfg.conductors == ("c1.example.com:2258", "c2.example.com:2258")
    assert cfg.targets()[1] == ("c2.example.com:2258", "c2.example.com")
    local = load_audience(audience_file(tmp_path, '""'), explicit=True)
    assert local.conductor == "" and local.conductors == () and local.targets() == ()
    path = audience_file(tmp_path, '["c1.example.com:2258", "c1.example.com:2258"]')
    assert "conductor: lists" in one_line_error(lambda: load_audience(path, explicit=True))
    path = audience_file(tmp_path, "[]")
    assert "conductor: must list 1 to 16" in one_line_error(lambda: load_audience(path, explicit=True))


@given(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,3}:[1-9][0-9]{0,3}", fullmatch=True),
                min_size=1, max_size=MAX_CONDUCTORS, unique_by=str.lower))
def test_any_valid_list_loads_as_written(addresses: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        listed = ", ".join(f'"{address}"' for address in addresses)
        cfg = load_player(player_file(Path(tmp), f"[{listed}]"))
    assert cfg.conductors == tuple(addresses)
    assert [name for _, name in cfg.targets()] == [address.rpartition(":")[0] for address in addresses]


# ---- conductor.toml: [store] --------------------------------------------------------------------

def test_without_a_store_table_the_queue_is_sqlite(tmp_path: Path) -> None:
    cfg = load_conductor(conductor_file(tmp_path, ""))
    assert cfg.store == StoreConfig() == StoreConfig(backend="sqlite", dsn="", lease_seconds=5.0, advertise="")
    assert load_conductor(conductor_file(tmp_path, "[store]\n")).store == StoreConfig()


def test_a_postgresql_store_is_read_whole(tmp_path: Path) -> None:
    cfg = load_conductor(conductor_file(tmp_path, f'[store]\nbackend = "postgresql"\ndsn = "{DSN}"\n'
                                                  'lease_seconds = 2.5\nadvertise = "c1.example.com:2258"\n'))
    assert cfg.store == StoreConfig("postgresql", DSN, 2.5, "c1.example.com:2258")
    assert SECRET not in repr(cfg.store) and SECRET not in repr(cfg)


@pytest.mark.parametrize("store, problem", [
    ('backend = "postgresql"', 'store.dsn: is required with backend = "postgresql"'),
    ('backend = "postgresql"\ndsn = "  "', "store.dsn: is required"),
    (f'dsn = "{DSN}"', 'store.dsn: is only for backend = "postgresql", not \'sqlite\''),
    (f'backend = "sqlite"\ndsn = "{DSN}"', "store.dsn: is only for"),
    (f'backend = "postgresql"\ndsn = "{DSN}"\nlease_seconds = 0.5', "store.lease_seconds: must be >= 1"),
    (f'backend = "postgresql"\ndsn = "{DSN}"\nlease_seconds = "5"', "store.lease_seconds: must be a number"),
    (f'backend = "mysql"\ndsn = "{DSN}"', "store.backend: must be one of sqlite, postgresql, not 'mysql'"),
    (f'backend = "postgresql"\ndsn = "{DSN}"\nadvertise = "c1.example.com"', "store.advertise: must be HOST:PORT"),
    (f'backend = "postgresql"\ndsn = "{DSN}"\nleader = "x"', "store.leader: unknown key"),
    (f'backend = "postgresql"\ndsn = ["{DSN}"]', "store.dsn: must be a string"),
    (f'backend = "postgresql"\ndsn = {{ url = "{DSN}" }}', "store.dsn: must be a string"),
])
def test_a_bad_store_table_is_refused_without_showing_the_dsn(tmp_path: Path, store: str, problem: str) -> None:
    path = conductor_file(tmp_path, f"[store]\n{store}\n")
    message = one_line_error(lambda: load_conductor(path))
    assert message.startswith(f"{path}: ") and problem in message
    assert SECRET not in message and "db.example.com" not in message


def test_a_store_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "conductor.toml"
    path.write_text(f'store = "{DSN}"\n[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n')
    message = one_line_error(lambda: load_conductor(path))
    assert "store: must be a table" in message and SECRET not in message


# ---- the refusal of a conductor that does not lead ----------------------------------------------

class Refusal(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, metadata: object) -> None:
        self._code, self._details, self._metadata = code, details, metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> object:
        return self._metadata


def test_a_refusal_names_the_leader_in_its_details_and_metadata() -> None:
    assert refusal_details("c1.example.com:2258") == "not the leader: the leader is c1.example.com:2258"
    assert refusal_details(None) == "not the leader: no conductor leads yet"
    assert refusal_metadata("c1.example.com:2258") == ((LEADER_METADATA, "c1.example.com:2258"),)
    assert refusal_metadata(None) == ()
    assert LEADER_METADATA == "orchestra-leader"
    assert PLAYER_LINK == player_pb2.DESCRIPTOR.services_by_name["PlayerLink"].full_name


def test_the_leader_hint_is_read_from_sync_and_asyncio_errors() -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    sync = Refusal(unavailable, refusal_details("c2:1"), (("other", "x"), (LEADER_METADATA, "c2:1")))
    assert leader_hint(sync) == "c2:1" and is_refusal(sync)
    aio = grpc.aio.AioRpcError(unavailable, grpc.aio.Metadata(), grpc.aio.Metadata((LEADER_METADATA, "c3:1")),
                               details=refusal_details("c3:1"))
    assert leader_hint(aio) == "c3:1" and is_refusal(aio)
    assert leader_hint(Refusal(unavailable, "not the leader: no conductor leads yet", ())) is None
    assert leader_hint(Refusal(unavailable, "x", None)) is None
    assert leader_hint(Refusal(unavailable, "x", ((LEADER_METADATA, "a b:1"),))) is None
    assert leader_hint(Refusal(unavailable, "x", ((LEADER_METADATA, "a:1"), (LEADER_METADATA, "b:1")))) is None
    assert not is_refusal(Refusal(unavailable, "failed to connect to all addresses", ()))
    assert not is_refusal(Refusal(grpc.StatusCode.FAILED_PRECONDITION, "not the leader", ()))
