"""Every command documents itself: --help ends with its exit codes, and its man page,
generated from the same parser, is committed current and renders cleanly with groff.

The pages are regenerated here (as ``python -m devtools.manpages`` does) and compared
with the committed ones, so an option or exit code changed without its page fails; groff
itself renders each page, warnings on (``-ww``), as ``man`` would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from audience.common import JOB_MEANINGS
from devtools import manpages
from orchestra.cli import INTERRUPTED, documented_exits
from orchestra.errors import ExitCode
from tests.conftest import required_tool

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
REGENERATE = "regenerate them with: .venv/bin/python -m devtools.manpages"


def groff() -> str:
    return required_tool("groff", "groff-base")

def flat(text: str) -> str:
    """Text with its line breaks and runs of blanks made single spaces (help is wrapped)."""
    return " ".join(text.split())


def test_every_console_script_has_a_generator_entry_and_a_committed_page() -> None:
    assert sorted(manpages.PARSERS) == sorted(SCRIPTS)
    for command in SCRIPTS:
        assert manpages.build_parser(command).prog == command
        assert (manpages.MAN_DIR / f"{command}.1").is_file(), f"no page for {command}: {REGENERATE}"
    # ... and the package installs them where man looks.
    data_files = PYPROJECT["tool"]["setuptools"]["data-files"]
    assert data_files["share/man/man1"] == ["man/man1/*.1"]
    assert sorted(p.stem for p in manpages.MAN_DIR.glob("*.1")) == sorted(SCRIPTS)


def test_committed_man_pages_are_what_the_parsers_generate(tmp_path: Path) -> None:
    # A narrow terminal must not change a page: help text is wrapped to its width.
    env = {**os.environ, "COLUMNS": "41"}
    result = subprocess.run([sys.executable, "-m", "devtools.manpages", "--output", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result
    generated = {path.name: path.read_text() for path in tmp_path.glob("*.1")}
    committed = {path.name: path.read_text() for path in manpages.MAN_DIR.glob("*.1")}
    assert sorted(generated) == sorted(committed), REGENERATE
    stale = [name for name in generated if generated[name] != committed[name]]
    assert stale == [], f"stale man pages {stale}: {REGENERATE}"


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_man_page_renders_without_warnings_and_lists_exit_codes_and_the_readme(command: str) -> None:
    tool = groff()
    page = manpages.MAN_DIR / f"{command}.1"
    checked = subprocess.run([tool, "-man", "-Tutf8", "-ww", "-z", str(page)],
                             capture_output=True, text=True, timeout=60)
    assert (checked.returncode, checked.stderr) == (0, "")
    rendered = subprocess.run([tool, "-man", "-Tutf8", "-P-cbou", str(page)], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert (rendered.returncode, rendered.stderr) == (0, "")
    text = flat(rendered.stdout)
    assert f"{command} - " in text and "SYNOPSIS" in text and "EXIT STATUS" in text
    documented = documented_exits(manpages.build_parser(command))
    assert documented is not None
    for code, meaning in documented[1]:
        assert flat(f"{code} {meaning}") in text, (command, code)
    assert "README.md" in text and "SEE ALSO" in text


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_help_of_every_command_ends_with_its_exit_codes(command: str) -> None:
    result = subprocess.run([str(BIN / command), "--help"], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "80"})
    assert (result.returncode, result.stderr) == (0, ""), result
    help_text = result.stdout
    documented = documented_exits(manpages.build_parser(command))
    assert documented is not None
    codes = documented[1]
    # The codes are ExitCode's (or the shell's Ctrl-C code), in order, each said once.
    assert [code for code, _ in codes] == sorted({code for code, _ in codes})
    assert {code for code, _ in codes} <= {*map(int, ExitCode), INTERRUPTED}
    assert ExitCode.OK in dict(codes) and ExitCode.USAGE in dict(codes)
    tail = help_text[help_text.index("\nExit codes:\n"):]
    listed = [int(line.split()[0]) for line in tail.splitlines()[2:] if re.match(r"\s+\d+\s", line)]
    assert listed == [code for code, _ in codes]
    for code, meaning in codes:
        assert flat(f"{code} {meaning}") in flat(tail), (command, code)


def test_subcommands_of_orchestra_pki_list_the_exit_codes_too() -> None:
    for sub in ("init", "issue", "revoke"):
        result = subprocess.run([str(BIN / "orchestra-pki"), sub, "--help"], capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0 and "\nExit codes:\n" in result.stdout, sub


def test_exit_codes_of_the_job_commands_are_the_readme_table() -> None:
    """One table: ExitCode, the meanings every job command's help derives from, and the
    README's table name the same codes."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("Exit codes (`submitjob`, `getstatus`, `canceljob`"):]
    rows = [int(code) for code in re.findall(r"^\| (\d+) \|", table.split("\n\n")[1], re.M)]
    assert rows == sorted(JOB_MEANINGS) == sorted(map(int, ExitCode))
