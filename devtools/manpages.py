"""Man pages for every command, generated from its argument parser.

``python -m devtools.manpages`` writes ``man/man1/COMMAND.1`` for each console script
(``--output DIR`` writes them elsewhere); the package installs them into
``share/man/man1``. tests/test_manpages.py regenerates them and fails when the committed
pages differ, so a changed option or exit code cannot leave its page behind. Each page
is argparse-manpage's rendering of the parser (synopsis, description, options), then the
command's exit codes (``orchestra.cli.document_exits``), its notes, and where to read more.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from orchestra.cli import documented_exits

ROOT = Path(__file__).resolve().parents[1]
MAN_DIR = ROOT / "man" / "man1"

# Every console script of pyproject.toml's [project.scripts]: where its parser is built,
# and the arguments that build it (the daemons share one parser, and so do drain and
# undrain; submitjob's page shows the modern form, and its notes the original one).
PARSERS: dict[str, tuple[str, tuple[object, ...]]] = {
    "conductor": ("orchestra.daemon", ("conductor",)),
    "player": ("orchestra.daemon", ("player",)),
    "submitjob": ("audience.parse", (False,)),
    "getstatus": ("audience.getstatus", ()),
    "canceljob": ("audience.canceljob", ()),
    "listplayers": ("audience.listplayers", ()),
    "listjobs": ("audience.listjobs", ()),
    "retryjob": ("audience.retryjob", ()),
    "deletejob": ("audience.deletejob", ()),
    "drain": ("audience.drain", (False,)),
    "undrain": ("audience.drain", (True,)),
    "submitworkflow": ("audience.submitworkflow", ()),
    "schedule": ("audience.schedule", ()),
    "orchestra-pki": ("devtools.pki", ()),
}
# Help text is wrapped to the terminal's width; pages must not depend on who made them.
WIDTH = "80"
MANUAL = "Orchestra Manual"
README = ("The operator's manual is README.md in the Orchestra sources (commands, configuration "
          "files, exit codes, shell completion); the user-visible contract is docs/CONTRACT.md.")


def build_parser(command: str) -> argparse.ArgumentParser:
    module, args = PARSERS[command]
    parser: argparse.ArgumentParser = importlib.import_module(module).build_parser(*args)
    return parser


def version() -> str:
    """The version pyproject.toml declares (the page's footer names it)."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def roff(text: str) -> str:
    """Text as one roff text line: backslashes and hyphens escaped, a leading '.' or "'"
    kept from being read as a request."""
    escaped = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\\&" + escaped if escaped.startswith((".", "'")) else escaped


def ascii_only(page: str) -> str:
    """groff reads its input as Latin-1 unless told otherwise: anything beyond ASCII is
    written as a named Unicode character (``\\[u00A7]``), which every groff understands."""
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in page)


@contextmanager
def fixed_width() -> Iterator[None]:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def name_line(description: str) -> str:
    """The NAME section's words: the description up to its first colon or full stop."""
    return description.split(". ")[0].split(": ")[0].rstrip(".")


def exit_status(codes: Sequence[tuple[int, str]]) -> str:
    return "\n".join(f".TP\n.B {code}\n{roff(meaning)}" for code, meaning in codes)


def see_also(command: str) -> str:
    others = sorted(name for name in PARSERS if name != command)
    refs = "\n".join(f".BR {roff(name)} (1){',' if i < len(others) - 1 else ''}"
                     for i, name in enumerate(others))
    return f"{refs}\n.PP\n{roff(README)}"


def page(command: str) -> str:
    """The man page of command, as roff source."""
    from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]

    parser = build_parser(command)
    documented = documented_exits(parser)
    if documented is None:
        raise SystemExit(f"{command}: its parser lists no exit codes (orchestra.cli.document_exits)")
    notes, codes = documented
    epilog, sections = parser.epilog, getattr(parser, "_manpage", None)
    # argparse-manpage renders the epilog itself and keeps extra sections on the parser
    # (which may be built once and cached): both are set for this page only.
    parser.epilog, parser._manpage = None, []  # type: ignore[attr-defined]
    try:
        with fixed_width():
            manpage = Manpage(parser)
            manpage.date = ""  # a page changes when its command does, not every day
            manpage.source = f"Orchestra {version()}"
            manpage.manual = MANUAL
            manpage.description = name_line(parser.description or "")
            # The synopsis is argparse's usage, whose options must stay hyphens.
            manpage.synopsis = [manpage.synopsis[0], roff(" ".join(manpage.synopsis[1:]))]
            manpage.add_section("exit status", ">", exit_status(codes))
            if notes:
                manpage.add_section("notes", ">", roff(notes))
            manpage.add_section("see also", ">", see_also(command))
            # No hyphenation and no justification: an option name broken across lines, or
            # words spread apart to fill one, reads badly.
            header, _, body = str(manpage).partition("\n")
            text = f"{header}\n.nh\n.ad l\n{body}"
    finally:
        parser.epilog, parser._manpage = epilog, sections  # type: ignore[attr-defined]
    return ascii_only(text)


def write(output: Path) -> list[Path]:
    """Write every command's page into output; returns the files written."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for command in PARSERS:
        path = output / f"{command}.1"
        path.write_text(page(command))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.manpages",
                                     description="Write each command's man page, from its parser.")
    parser.add_argument("--output", type=Path, default=MAN_DIR, metavar="DIR",
                        help=f"where to write COMMAND.1 (default: {MAN_DIR.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    for path in write(args.output):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
