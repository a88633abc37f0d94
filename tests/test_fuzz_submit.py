"""Generated submissions thrown at a running conductor: a smoke test of the live path.

Every one is either accepted or rejected with INVALID_ARGUMENT (exit 2 on the CLI) and a
clear one-line message; the conductor never crashes; rejected ones leave nothing queued.
The command-line parsing itself is covered in-process, with thousands of examples, by
test_parse_submission.py; here a few dozen requests check that the conductor, the wire and
the CLI agree with it.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devtools.devcluster import Cluster
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
GENERATED = 20  # plus the explicit examples below: 25 requests in all


def job_ids(cluster: Cluster) -> set[str]:
    return {str(row["id"]) for row in queue_rows(cluster, "jobs")}


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("fuzz"), PLAYERS, log_level="warning")
    try:
        cluster.start(players=["p1.test"])
        yield cluster
    finally:
        cluster.stop()


def test_generated_submissions_are_accepted_or_cleanly_rejected(fuzz_cluster: Cluster) -> None:
    channel = grpc.insecure_channel(f"unix:{fuzz_cluster.socket}")
    stub = audience_pb2_grpc.AudienceStub(channel)
    before = job_ids(fuzz_cluster)
    accepted: set[str] = set()
    rejected = 0

    @settings(max_examples=GENERATED, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(submissions)
    @example({"score": "hello", "targets": ["p1.test"], "params": {"who": "ops"}, "scope": 0,
              "expires_seconds": 0})
    @example({"score": "hello", "targets": PLAYERS, "params": {}, "scope": 1, "expires_seconds": 60})
    @example({"score": "hello", "targets": PLAYERS, "params": {}, "scope": 0, "expires_seconds": 0})
    @example({"score": "hello", "targets": ["stranger.test"], "params": {}, "scope": 1,
              "expires_seconds": 0})
    @example({"score": "hello", "targets": ["p1.test"], "params": {"job_id": "x", "v": "a\x00"},
              "scope": 2, "expires_seconds": 0})
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
    assert not accepted & before
    assert job_ids(fuzz_cluster) == before | accepted
    assert accepted and rejected  # both kinds were exercised


# A handful of real command lines, each kind once: parsed by the CLI, judged by the conductor.
@pytest.mark.parametrize("words, expected", [
    (["hello", "who=ops"], 0),
    (["fail", "code=7", "p1.test"], 0),
    (["../x"], 2),  # refused by the CLI
    (["hello", "a-b=1"], 2),  # refused by the CLI
    (["hello", "stranger.test"], 2),  # refused by the conductor: not in the players file
    (["hello", "big=" + "v" * 40_000], 2),
])
def test_command_lines_exit_0_or_2_with_one_line(fuzz_cluster: Cluster, words: list[str],
                                                 expected: int) -> None:
    before = len(queue_rows(fuzz_cluster, "jobs"))
    result = fuzz_cluster.cli("submitjob", "--all-of", "--", *words, "offline.test")
    after = len(queue_rows(fuzz_cluster, "jobs"))
    assert result.returncode in (0, 2), (result.returncode, result.stderr)
    assert result.returncode == expected, result.stderr
    if result.returncode == 2:
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert after == before
    else:
        assert after == before + 1 and len(result.stdout.strip()) == 32
    assert fuzz_cluster.conductor().running
