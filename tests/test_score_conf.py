""".conf directives that ask the conductor for something (retries, retry_delay,
concurrency, exclusive): parsed, bounded, and carried to the conductor in the inventory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.inventory import ScoreEntry, decode_inventory, encode_inventory, inventory_from_wire
from orchestra.params import ParamDecl, ScoreDecls
from orchestra.wire import common_pb2
from player.scores import MAX_CONCURRENCY, MAX_RETRIES, MAX_RETRY_DELAY, ScoreConf, parse_conf, scan
from player.watch import inventory_entry, scan_inventory


def test_defaults_ask_for_nothing() -> None:
    conf = parse_conf("interface env\n")
    assert (conf.retries, conf.retry_delay, conf.concurrency, conf.exclusive) == (0, 0.0, 0, False)
    assert conf == ScoreConf()


def test_every_directive_in_both_spellings_with_comments() -> None:
    conf = parse_conf("RETRIES 3   # three more tries\n"
                      "retry_delay = 2.5 ; seconds\n"
                      "Concurrency=10\n"
                      "exclusive YES\n")
    assert (conf.retries, conf.retry_delay, conf.concurrency, conf.exclusive) == (3, 2.5, 10, True)


@pytest.mark.parametrize("word, expected", [
    ("yes", True), ("true", True), ("on", True), ("Yes", True), ("TRUE", True), ("On", True),
    ("no", False), ("false", False), ("off", False), ("NO", False), ("False", False), ("oFF", False),
])
def test_exclusive_takes_yes_no_true_false_on_off(word: str, expected: bool) -> None:
    assert parse_conf(f"exclusive {word}\n").exclusive is expected


@pytest.mark.parametrize("text, message", [
    ("retries 101", "line 1: retries must be a whole number from 0 to 100, not '101'"),
    ("retries -1", "line 1: retries must be a whole number from 0 to 100, not '-1'"),
    ("retries 1.5", "line 1: retries must be a whole number from 0 to 100, not '1.5'"),
    ("retries +2", "line 1: retries must be a whole number from 0 to 100, not '+2'"),
    ("retries 1_0", "line 1: retries must be a whole number from 0 to 100, not '1_0'"),
    ("retries 1e1", "line 1: retries must be a whole number from 0 to 100, not '1e1'"),
    ("retries", "line 1: retries must be a whole number from 0 to 100, not ''"),
    ("retries 2 3", "line 1: retries must be a whole number from 0 to 100, not '2 3'"),
    ("retries ٣", "line 1: retries must be a whole number from 0 to 100, not '٣'"),
    ("retry_delay -1", "line 1: retry_delay must be a number of seconds from 0 to 86400, not '-1'"),
    ("retry_delay 86400.5", "line 1: retry_delay must be a number of seconds from 0 to 86400, not '86400.5'"),
    ("retry_delay nan", "line 1: retry_delay must be a number of seconds from 0 to 86400, not 'nan'"),
    ("retry_delay inf", "line 1: retry_delay must be a number of seconds from 0 to 86400, not 'inf'"),
    ("retry_delay 1e3", "line 1: retry_delay must be a number of seconds from 0 to 86400, not '1e3'"),
    ("retry_delay 5s", "line 1: retry_delay must be a number of seconds from 0 to 86400, not '5s'"),
    ("concurrency 0", "line 1: concurrency must be a whole number from 1 to 1,000,000, not '0'"),
    ("concurrency 1000001", "line 1: concurrency must be a whole number from 1 to 1,000,000, not '1000001'"),
    ("concurrency many", "line 1: concurrency must be a whole number from 1 to 1,000,000, not 'many'"),
    ("exclusive 1", "line 1: exclusive must be yes or no (or true/false, on/off), not '1'"),
    ("exclusive", "line 1: exclusive must be yes or no (or true/false, on/off), not ''"),
    ("exclusive maybe", "line 1: exclusive must be yes or no (or true/false, on/off), not 'maybe'"),
])
def test_bad_values_are_refused_with_the_line_number(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_conf(text + "\n")
    assert str(raised.value) == message


def test_error_names_the_line_it_is_on() -> None:
    with pytest.raises(ValueError, match=r"^line 3: concurrency must be"):
        parse_conf("interface env\n# a comment\nconcurrency 0\n")


def test_bounds_are_accepted() -> None:
    assert parse_conf("retries 0").retries == 0
    assert parse_conf(f"retries {MAX_RETRIES}").retries == 100
    assert parse_conf("retries 007").retries == 7
    assert parse_conf("retry_delay 0").retry_delay == 0.0
    assert parse_conf("retry_delay .5").retry_delay == 0.5
    assert parse_conf("retry_delay 3.").retry_delay == 3.0
    assert parse_conf(f"retry_delay {MAX_RETRY_DELAY:g}").retry_delay == 86400.0
    assert parse_conf("concurrency 1").concurrency == 1
    assert parse_conf(f"concurrency {MAX_CONCURRENCY}").concurrency == 1_000_000


def test_a_huge_number_is_out_of_range_not_a_crash() -> None:
    with pytest.raises(ValueError, match="^line 1: retries must be a whole number"):
        parse_conf("retries " + "9" * 5000)
    with pytest.raises(ValueError, match="^line 1: retry_delay must be"):
        parse_conf("retry_delay " + "9" * 5000)


@given(st.integers(min_value=0, max_value=MAX_RETRIES))
def test_any_retries_in_range_parses_to_itself(retries: int) -> None:
    assert parse_conf(f"retries {retries}").retries == retries


@given(st.integers(min_value=1, max_value=MAX_CONCURRENCY))
def test_any_concurrency_in_range_parses_to_itself(concurrency: int) -> None:
    assert parse_conf(f"concurrency = {concurrency}").concurrency == concurrency


@given(st.integers().filter(lambda n: not 0 <= n <= MAX_RETRIES))
def test_any_retries_out_of_range_is_refused(retries: int) -> None:
    with pytest.raises(ValueError, match="^line 1: retries must be"):
        parse_conf(f"retries {retries}")


@given(st.integers().filter(lambda n: not 1 <= n <= MAX_CONCURRENCY))
def test_any_concurrency_out_of_range_is_refused(concurrency: int) -> None:
    with pytest.raises(ValueError, match="^line 1: concurrency must be"):
        parse_conf(f"concurrency {concurrency}")


@given(st.decimals(min_value=0, max_value=MAX_RETRY_DELAY, places=3, allow_nan=False))
def test_any_delay_in_range_parses_to_its_value(delay: object) -> None:
    text = f"{delay:f}"
    assert parse_conf(f"retry_delay {text}").retry_delay == float(text)


# One line of text: without the characters str.splitlines() ends a line at.
ONE_LINE = st.text(max_size=30).filter(lambda text: len(text.splitlines()) <= 1 and not text.endswith(("\n", "\r")))


@given(ONE_LINE)
def test_any_text_either_parses_within_bounds_or_says_which_line(value: str) -> None:
    """Whatever follows a directive, the parser returns a conf within bounds or raises
    ValueError("line 1: ...") -- nothing else."""
    for key in ("retries", "retry_delay", "concurrency", "exclusive"):
        try:
            conf = parse_conf(f"{key} {value}")
        except ValueError as err:
            assert str(err).startswith("line 1: ")
            continue
        assert 0 <= conf.retries <= MAX_RETRIES
        assert 0.0 <= conf.retry_delay <= MAX_RETRY_DELAY
        assert conf.concurrency == 0 or 1 <= conf.concurrency <= MAX_CONCURRENCY
        assert isinstance(conf.exclusive, bool)


# ---- carried to the conductor ------------------------------------------------------------


def test_score_entry_round_trips_through_the_wire_with_the_new_fields() -> None:
    entry = ScoreEntry("deploy", True, interface="pipe", timeout_seconds=30,
                       decls=ScoreDecls((ParamDecl("WHO", True, "[a-z]+", (), None, False),)),
                       retries=3, retry_delay=2.5, concurrency=10, exclusive=True)
    wire = entry.to_wire()
    assert (wire.retries, wire.retry_delay, wire.concurrency, wire.exclusive) == (3, 2.5, 10, True)
    assert ScoreEntry.from_wire(wire) == entry
    inventory = (entry, ScoreEntry("broken", False, error="line 2: retries must be ..."))
    assert decode_inventory(encode_inventory(inventory)) == inventory


def test_score_info_from_an_older_player_asks_for_nothing() -> None:
    old = common_pb2.ScoreInfo(name="hello", valid=True, interface="env", timeout_seconds=5)
    [entry] = inventory_from_wire([common_pb2.ScoreInfo.FromString(old.SerializeToString())])
    assert (entry.retries, entry.retry_delay, entry.concurrency, entry.exclusive) == (0, 0.0, 0, False)


def test_an_entry_that_asks_for_nothing_is_encoded_as_before() -> None:
    """An older conductor sees exactly the bytes it saw before these fields existed."""
    entry = ScoreEntry("hello", True, interface="env", timeout_seconds=5)
    assert entry.to_wire().SerializeToString() == common_pb2.ScoreInfo(
        name="hello", valid=True, interface="env", timeout_seconds=5).SerializeToString()


def install(scores_dir: Path, name: str, conf: str) -> None:
    scores_dir.mkdir(exist_ok=True)
    scores_dir.chmod(0o755)  # the player refuses a directory others may write to
    script = scores_dir / name
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    (scores_dir / f"{name}.conf").write_text(conf)
    (scores_dir / f"{name}.conf").chmod(0o644)


def test_the_players_inventory_carries_what_each_conf_asks(tmp_path: Path) -> None:
    scores_dir = tmp_path / "scores"
    install(scores_dir, "deploy", "timeout 60\nretries 2\nretry_delay 30\nconcurrency 5\nexclusive on\n")
    install(scores_dir, "plain", "interface pipe\n")
    install(scores_dir, "broken", "retries lots\n")

    infos = {info.name: info for info in scan_inventory(scores_dir, default_timeout=300)}

    deploy = ScoreEntry.from_wire(infos["deploy"])
    assert deploy == ScoreEntry("deploy", True, interface="env", timeout_seconds=60, retries=2,
                                retry_delay=30.0, concurrency=5, exclusive=True)
    assert ScoreEntry.from_wire(infos["plain"]) == ScoreEntry("plain", True, interface="pipe",
                                                              timeout_seconds=300)
    broken = ScoreEntry.from_wire(infos["broken"])
    assert not broken.valid and broken.retries == 0
    assert broken.error == ("broken.conf line 1: retries must be a whole number from 0 to 100,"
                            " not 'lots'")
    # The Hello and the Inventory messages are built from the same entries.
    assert [inventory_entry(item, 300).to_wire() for item in scan(scores_dir)] == list(infos.values())
