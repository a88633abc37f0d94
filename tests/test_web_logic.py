"""The web view's pure logic, without a conductor: output decoding, the per-minute
history, the listing's filters, and the pictures."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conductor.web import pictures
from conductor.web.filters import DEFAULT_LIMIT, job_filters
from conductor.web.history import History
from conductor.web.outputtext import OutputText
from orchestra.config import load_conductor
from orchestra.errors import ConfigError, ValidationError


def shown(items: list[dict[str, str]], kind: str = "out") -> str:
    return "".join(item["t"] for item in items if item["s"] == kind)


@given(st.text(), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_output_split_anywhere_reads_as_the_text_it_was(text: str, cuts: list[int]) -> None:
    data = text.encode()
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces = [data[start:end] for start, end in zip([0, *points], [*points, len(data)])]
    output = OutputText()
    items = [item for piece in pieces for item in output.add("stdout", piece)] + output.finish()
    assert shown(items) == text  # a character split between pieces is shown whole


def test_gaps_are_marked_on_a_line_of_their_own_and_bad_bytes_replaced() -> None:
    output = OutputText()
    items = output.add("stdout", b"partial line")
    items += output.add("stdout", b"after", skipped=12345)
    items += output.add("stderr", b"err\xff\n", cut=True)
    items += output.add("stdout", b"\xe2\x82")  # the start of a character, never finished
    items += output.finish()
    assert [item["s"] for item in items] == ["out", "mark", "out", "mark", "err", "out"]
    assert items[1]["t"] == "\n[… 12345 bytes skipped …]\n"
    assert items[3]["t"] == "[… output cut by the player's cap …]\n"
    assert items[4]["t"] == "err\ufffd\n" and items[5]["t"] == "\ufffd"
    assert output.add("other", b"x") == []


def test_history_counts_endings_by_minute_and_forgets_the_hour_before() -> None:
    history = History({"ok": 5, "failed": 1}, now=600.0)  # what ended before is not counted
    history.sample({"ok": 7, "failed": 1, "lost": 1}, now=610.0)
    history.sample({"ok": 8, "failed": 2, "lost": 1, "cancelled": 4}, now=700.0)
    ended, failed = history.series(now=700.0)
    assert len(ended) == 60 and ended[-2:] == [3, 6] and failed[-2:] == [1, 1]  # cancelled is no failure
    ended, failed = history.series(now=700.0 + 60 * 59)
    assert ended[0] == 6 and sum(ended) == 6
    assert history.series(now=700.0 + 60 * 60) == ([0] * 60, [0] * 60)


def test_filters_become_the_listjobs_request_and_bad_ones_are_refused() -> None:
    filters = job_filters({"status": ["failed", "failed", ""], "label": ["team=ops"], "since": ["2h"],
                           "mine": ["on"], "score": [" deploy "], "limit": ["20"], "other": ["x"]})
    request = filters.request(now=10_000.0)
    assert list(request.statuses) == ["failed"] and list(request.labels) == ["team=ops"]
    assert request.since == 10_000.0 - 7200 and request.mine and request.score == "deploy" and request.limit == 20
    assert filters.query() == "status=failed&score=deploy&label=team%3Dops&since=2h&mine=1&limit=20"
    assert job_filters({}).limit == DEFAULT_LIMIT and job_filters({}).query() == ""
    for bad in ({"status": ["done"]}, {"limit": ["0"]}, {"limit": ["many"]}, {"score": ["x" * 600]},
                {"label": ["a=b"] * 40}):
        with pytest.raises(ValidationError):
            job_filters(bad)
    with pytest.raises(ValidationError, match="age"):
        job_filters({"since": ["last tuesday"]}).request(now=0.0)


def test_pictures_are_well_formed_svg_with_every_name_escaped() -> None:
    drawings = [pictures.stacked_bar([("ok", 3), ("failed", 1)]), pictures.stacked_bar([]),
                pictures.task_grid([("<b>h1</b>", "running"), ("h2 & co", "ok")]),
                pictures.minute_chart([0, 2, 5], "ended", "tasks ended"), pictures.minute_chart([], "ended", "none"),
                pictures.level_bars([("queued", 4), ("running", 0)], "open tasks")]
    for drawing in drawings:
        root = ET.fromstring(str(drawing))  # parses: nothing a name held broke out of its place
        assert root.tag.endswith("svg") and root.get("role") == "img"
    grid = ET.fromstring(str(drawings[2]))
    titles = [element.text for element in grid.iter() if element.tag.endswith("title")]
    assert titles == ["<b>h1</b>: running", "h2 & co: ok"] and grid.get("id") == "grid"
    assert len(list(grid)) == 2  # one square per task, in order: what a live page recolours
    bar = ET.fromstring(str(drawings[0]))
    widths = [float(rect.get("width", 0)) for rect in bar if rect.get("class", "").startswith("st-")]
    assert widths == [450.0, 150.0]


def test_web_listen_is_off_by_default_and_checked_like_any_address(tmp_path: Path) -> None:
    base = ('[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n')
    path = tmp_path / "conductor.toml"
    path.write_text(base)
    assert load_conductor(path).web_listen == ""
    path.write_text('web_listen = "0.0.0.0:8443"\n' + base)
    assert load_conductor(path).web_listen == "0.0.0.0:8443"
    for bad in ("8443", "host:", "host:99999", ":8443"):
        path.write_text(f'web_listen = "{bad}"\n' + base)
        with pytest.raises(ConfigError, match=f"{path}: web_listen: must be HOST:PORT"):
            load_conductor(path)
