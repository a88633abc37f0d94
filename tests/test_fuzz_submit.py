"""Thousands of generated submissions thrown at a running conductor (property-based).

Every one is either accepted or rejected with INVALID_ARGUMENT (exit 2 on the CLI) and a
clear one-line message; the conductor never crashes; rejected ones leave nothing queued.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestra.devcluster import Cluster
from orchestra.wire import audience_pb2, audience_pb2_grpc
from tests.conftest import queue_rows

PLAYERS = ["p1.test", "offline.test"]
names = st.one_of(st.sampled_from(["hello", "fail", "showenv", "no-such", "a.b-c_d"]),
                  st.text(max_size=80))
targets = st.lists(st.one_of(st.sampled_from(PLAYERS), st.text(max_size=40)), max_size=4)
keys = st.one_of(st.sampled_from(["who", "WHO", "code", "path", "job_id", "x" * 65]),
                 st.text(max_size=70))
values = st.one_of(st.text(max_size=200), st.text(alphabet="ab\x00\n$`;", max_size=20),
                   st.builds(lambda n: "v" * n, st.integers(0, 40_000)))
submissions = st.fixed_dictionaries({
    "score": names,
    "targets": targets,
    "params": st.dictionaries(keys, values, max_size=6),
    "scope": st.sampled_from([0, 1, 2]),
    "expires_seconds": st.integers(0, 10**6),
})


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    cluster = Cluster(tmp_path_factory.mktemp("fuzz"), PLAYERS, log_level="warning")
    cluster.start(players=["p1.test"])
    yield cluster
    cluster.stop()


def test_generated_submissions_are_accepted_or_cleanly_rejected(fuzz_cluster: Cluster) -> None:
    channel = grpc.insecure_channel(f"unix:{fuzz_cluster.socket}")
    stub = audience_pb2_grpc.AudienceStub(channel)
    accepted: set[str] = set()
    rejected = 0

    @settings(max_examples=2000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(submissions)
    def throw(fields: dict[str, object]) -> None:
        nonlocal rejected
        try:
            request = audience_pb2.SubmitRequest(**fields)  # type: ignore[arg-type]
        except ValueError:
            return  # protobuf itself refuses strings that are not valid UTF-8
        try:
            accepted.add(stub.Submit(request, timeout=30).job_id)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details(), fields)
            message = err.details() or ""
            assert message and "\n" not in message and "Traceback" not in message
            rejected += 1
    throw()
    channel.close()
    assert fuzz_cluster.conductor().running
    assert {row["id"] for row in queue_rows(fuzz_cluster, "jobs")} == accepted
    assert accepted and rejected  # both kinds were exercised


argv_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=40)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(score=st.one_of(st.sampled_from(["hello", "../x", ".hidden"]), argv_text),
       words=st.lists(st.one_of(st.sampled_from(PLAYERS + ["who=ops", "=x", "a-b=1"]), argv_text),
                      max_size=4))
def test_generated_command_lines_exit_0_or_2_with_one_line(fuzz_cluster: Cluster, score: str,
                                                           words: list[str]) -> None:
    before = len(queue_rows(fuzz_cluster, "jobs"))
    result = fuzz_cluster.cli("submitjob", "--all-of", "--", score, *words, "offline.test")
    after = len(queue_rows(fuzz_cluster, "jobs"))
    assert result.returncode in (0, 2), (result.returncode, result.stderr)
    if result.returncode == 2:
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert after == before
    else:
        assert after == before + 1 and len(result.stdout.strip()) == 32
