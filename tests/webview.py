"""Helpers for the web view's tests: a cluster serving it, HTTPS clients presenting a
certificate of their choice, and a reader of event streams."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.devcluster import Cluster, write_toml
from tests.conftest import MakeCluster, submit

# A score that prints, then waits for the file $ORC_GO names, then prints once more.
WAITING = """#!/bin/sh
echo "started on $ORC_PLAYER"
echo "a warning from $ORC_PLAYER" >&2
while [ ! -e "$ORC_GO" ]; do sleep 0.05; done
echo "done on $ORC_PLAYER"
echo "host=$ORC_PLAYER" > "$ORC_RESPONSE_FILE"
"""
WAITING_CONF = "interface env\ntimeout 120\n"
JOB_ID = re.compile(r"[0-9a-f]{32}")
# Audience identities: alice and bob may use the API; neither may read the other's jobs.
AUDIENCE = ("alice.test", "bob.test", "carol.test")
EVERYTHING = {"scores": ["*"], "targets": ["*"]}


def web_cluster(make_cluster: MakeCluster, players: list[str] | None = None,
                settings: dict[str, object] | None = None, **kwargs: object) -> Cluster:
    """A started cluster serving the web view, with the score ``waiting`` installed."""
    settings = {"audience": {name: EVERYTHING for name in AUDIENCE}, **(settings or {})}
    cluster = make_cluster(players or ["p1.test", "p2.test"], audience_names=list(AUDIENCE), web=True,
                           conductor_settings=settings, **kwargs)
    cluster.add_score("waiting", WAITING, WAITING_CONF)
    return cluster


def submit_as(cluster: Cluster, name: str, *args: str) -> str:
    """Submit a job over mTLS as the audience certificate ``name``; its id."""
    result = cluster.cli("submitjob", *args, config=cluster.remote_audience_config(name))
    assert result.returncode == 0, result.stderr
    found = JOB_ID.search(result.stdout)
    assert found is not None, result.stdout
    return found.group()


def submit_local(cluster: Cluster, *args: str) -> str:
    code, out, err = submit(cluster, *args)
    assert code == 0, err
    found = JOB_ID.search(out)
    assert found is not None, out
    return found.group()


def set_audience(cluster: Cluster, audience: dict[str, object]) -> None:
    """Rewrite conductor.toml's [audience] table (the conductor reads it on SIGHUP)."""
    import tomllib

    top = tomllib.loads(cluster.conductor_config.read_text())
    tls = top.pop("tls")
    top["audience"] = audience
    write_toml(cluster.conductor_config, top, tls)


def client_context(cluster: Cluster, name: str | None, ssl_dir: Path | None = None) -> ssl.SSLContext:
    """A TLS client trusting the cluster's CA, presenting ``name``'s certificate (from
    ``ssl_dir``, another CA's, if given), or none."""
    context = ssl.create_default_context(cafile=str(cluster.ssl.ca_cert))
    context.check_hostname = False  # the conductor's certificate names its host, not 127.0.0.1
    if name is not None:
        base = ssl_dir or cluster.ssl.root
        context.load_cert_chain(str(base / "certs" / f"{name}.pem"), str(base / "private_keys" / f"{name}.pem"))
    return context


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str


def request(cluster: Cluster, path: str, name: str | None = "alice.test", method: str = "GET",
            ssl_dir: Path | None = None) -> Answer:
    """One request to the web view; raises what TLS raises when the connection is refused."""
    connection = http.client.HTTPSConnection("127.0.0.1", cluster.web_port,
                                             context=client_context(cluster, name, ssl_dir), timeout=15)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


class Events:
    """An event stream read as it comes (``with Events(...) as events``)."""

    def __init__(self, cluster: Cluster, path: str, name: str = "alice.test") -> None:
        self.connection = http.client.HTTPSConnection("127.0.0.1", cluster.web_port,
                                                      context=client_context(cluster, name), timeout=30)
        self.connection.request("GET", path)
        self.response = self.connection.getresponse()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.close()

    def next(self, timeout: float = 30) -> tuple[str, dict[str, object]]:
        """The next event (name, data); heartbeats and the retry line are skipped."""
        deadline = time.monotonic() + timeout
        event, data = "message", ""
        while time.monotonic() < deadline:
            line = self.response.fp.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
            elif line == "" and data:
                return event, json.loads(data)
        raise TimeoutError("no event in time")

    def until(self, wanted: str, timeout: float = 30) -> dict[str, object]:
        """Events until one named ``wanted``; its data."""
        deadline = time.monotonic() + timeout
        while True:
            event, data = self.next(max(0.1, deadline - time.monotonic()))
            if event == wanted:
                return data


def audit_entries(cluster: Cluster) -> list[dict[str, object]]:
    path = cluster.state_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
