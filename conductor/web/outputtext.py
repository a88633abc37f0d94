"""A task's live output as text for the browser: pure.

Pieces are raw bytes as the score wrote them and may end mid-line or in the middle of a
UTF-8 character: each stream has its own incremental decoder, so a character split
between two pieces is shown whole, and bytes that are not UTF-8 are shown as U+FFFD.
Where output is missing, a marker line says so instead of joining what came before and
after as if nothing were between them: ``[… 12345 bytes skipped …]`` when bytes were not
shown (watching began late, or a viewer or the player fell behind), ``[… output cut by
the player's cap …]`` when the player's output cap emptied the file. The browser shows
each item as text (never as markup), stderr and markers styled apart.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

STREAMS = {"stdout": "out", "stderr": "err"}
MARK = "mark"


@dataclass
class _Stream:
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    at_line_start: bool = True


class OutputText:
    """Turns pieces of output into items ``{"s": "out"|"err"|"mark", "t": text}``."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def add(self, stream: str, data: bytes, skipped: int = 0, cut: bool = False) -> list[dict[str, str]]:
        """The items one piece of ``stream`` ("stdout" or "stderr") adds."""
        kind = STREAMS.get(stream)
        if kind is None:
            return []
        state = self._streams.setdefault(stream, _Stream())
        items: list[dict[str, str]] = []
        if skipped > 0 or cut:
            items += self._flush(state, kind)  # what came before the gap ends there
            lead = "" if state.at_line_start else "\n"
            if skipped > 0:
                items.append({"s": MARK, "t": f"{lead}[… {skipped} bytes skipped …]\n"})
                lead = ""
            if cut:
                items.append({"s": MARK, "t": f"{lead}[… output cut by the player's cap …]\n"})
            state.at_line_start = True
        items += self._text(state, kind, state.decoder.decode(data))
        return items

    def finish(self) -> list[dict[str, str]]:
        """What is left in the decoders once the output is over (a character cut short
        at the very end is shown as U+FFFD)."""
        items: list[dict[str, str]] = []
        for stream, state in self._streams.items():
            items += self._flush(state, STREAMS[stream])
        return items

    def _flush(self, state: _Stream, kind: str) -> list[dict[str, str]]:
        rest = state.decoder.decode(b"", final=True)
        state.decoder.reset()
        return self._text(state, kind, rest)

    @staticmethod
    def _text(state: _Stream, kind: str, text: str) -> list[dict[str, str]]:
        if not text:
            return []
        state.at_line_start = text.endswith("\n")
        return [{"s": kind, "t": text}]
