"""The one way every Orchestra command ends: a known error is one line and an exit code.

Daemons, audience commands and orchestra-pki all run their body through ``run_cli`` so a
known problem never reaches the user as a traceback, and every command reports it the
same way (``prog: message``) with the exit code the error carries (CONTRACT.md §6).

It also holds what all their human-readable output shares: ``visible`` (text that came
from a user or a score is shown, never obeyed by the terminal) and ``write_out`` (a
reader that closed the pipe, as ``| head`` does, ends the output quietly); what their
``--help`` shares (``document_exits``: the exit codes, last); and the hook that answers
the shell's tab completion (``offer_completions``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from orchestra.errors import OrchestraError

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
# Exit code of a command whose output pipe was closed before it finished writing and that
# has no better answer of its own: the reader has what it wanted (`| head`), and 141
# (128 + SIGPIPE) would fail every `set -o pipefail` pipeline that ends in head.
CLOSED_PIPE = 0


def _escape(code: int) -> str:
    """Python's own spelling of a character in a string literal: \\n, \\r, \\x1b, \\u202e."""
    if code in (0x0A, 0x0D):
        return "\\n" if code == 0x0A else "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# Characters a terminal would obey instead of showing: the C0 and C1 controls and DEL
# (Unicode category Cc) except tab, which only lays text out; the bidirectional
# embeddings, overrides and isolates, which reorder what is shown around them; and the
# line and paragraph separators, which some programs treat as newlines. Newline is in
# the set too: text shown on one line must not forge the lines after it, and text of
# many lines (a score's output) is split at its newlines before each line is shown.
UNSAFE = frozenset([*(c for c in range(0x20) if c != ord("\t")), *range(0x7F, 0xA0),
                    0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                    0x2028, 0x2029])
_ESCAPES = {code: _escape(code) for code in UNSAFE}


def visible(text: str) -> str:
    """Text from a user, a score or the conductor, safe to write to a terminal as one
    line: each unsafe character becomes a visible escape (ESC is shown as the four
    characters ``\\x1b``, a newline as ``\\n``), so a score's output cannot clear the
    operator's screen, move the cursor, retitle the window, forge a line or disguise what
    is printed. Everything else is left exactly as it is (``--json`` keeps the exact data)."""
    return text.translate(_ESCAPES)


def one_line(text: str) -> str:
    """Fold a message onto one line: scripts read stderr line by line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: {visible(one_line(message)) or 'error'}\n")


def discard_output() -> None:
    """Point stdout at /dev/null once its reader has gone, so that neither later writes nor
    the interpreter's final flush raise BrokenPipeError (which Python would report as a
    traceback or an "Exception ignored" message and exit 120)."""
    try:
        target = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # no real stdout: nothing will flush it
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, target)
    finally:
        os.close(devnull)


def _flush_out() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_output()


def write_out(text: str) -> None:
    """Write to stdout now. If nobody reads it any more (``| head``), drop this and all
    later output quietly: the command still finishes and exits with its own code."""
    try:
        sys.stdout.write(text)
    except BrokenPipeError:  # a write larger than the buffer goes straight to the pipe
        discard_output()
    _flush_out()


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run body and return its exit code; an OrchestraError becomes one line on stderr
    and the error's own exit code, Ctrl-C becomes "interrupted" and 130.

    Output that nobody reads any more ends quietly: buffered output is flushed here
    (also when argparse exits after --help), where a closed pipe can be handled, rather
    than in the interpreter's flush at exit; the command keeps the exit code it had, and
    a body cut short by the closed pipe exits CLOSED_PIPE.
    """
    try:
        code = body()
    except BrokenPipeError:
        discard_output()
        code = CLOSED_PIPE
    except OrchestraError as err:
        report(prog, str(err))
        code = int(err.exit_code)
    except KeyboardInterrupt:
        report(prog, "interrupted")
        code = INTERRUPTED
    finally:
        _flush_out()
    return code


# ---- --help: every command ends it with what its exit codes mean ----------------------

# (code, meaning) pairs, in the order --help and the man page list them. The codes are
# orchestra.errors.ExitCode members (and INTERRUPTED); each kind of command states its
# table once, where its parsers are built (audience.common, orchestra.daemon, devtools.pki).
ExitMeanings = tuple[tuple[int, str], ...]
INTERRUPTED_MEANING = (INTERRUPTED, "interrupted (Ctrl-C)")
_DOCUMENTED = "_orchestra_exits"  # where document_exits keeps a parser's own epilog and codes
_SECOND_COLUMN = re.compile(r"\s+\S+\s+")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a description or epilog keeps its line breaks:
    each line is wrapped on its own, and the continuation of an indented line is aligned
    under its second column, so the exit codes stay a table at any terminal width."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap  # as argparse does: only help text needs it

        lines = []
        for line in text.splitlines():
            body = line.lstrip()
            if not body:
                lines.append("")
                continue
            # "  130  interrupted ...": an indented line goes on under "interrupted".
            column = _SECOND_COLUMN.match(line) if body != line else None
            hanging = column.end() if column else 0
            lines.append(textwrap.fill(line, width, initial_indent=indent,
                                       subsequent_indent=indent + " " * hanging))
        return "\n".join(lines)


def exit_codes_text(codes: ExitMeanings) -> str:
    """The "Exit codes:" paragraph that ends a command's --help."""
    return "Exit codes:\n" + "\n".join(f"{code:>5}  {meaning}" for code, meaning in codes)


def document_exits(parser: argparse.ArgumentParser, codes: ExitMeanings) -> None:
    """End parser's --help with what each of its exit codes means (after the epilog it
    has), and keep both apart for its man page (``documented_exits``)."""
    setattr(parser, _DOCUMENTED, (parser.epilog, codes))
    parser.epilog = "\n\n".join(part for part in (parser.epilog, exit_codes_text(codes)) if part)
    parser.formatter_class = HelpFormatter


def documented_exits(parser: argparse.ArgumentParser) -> tuple[str | None, ExitMeanings] | None:
    """The epilog parser had before ``document_exits`` and its exit codes (None if it has none)."""
    found: tuple[str | None, ExitMeanings] | None = getattr(parser, _DOCUMENTED, None)
    return found


# ---- tab completion ---------------------------------------------------------------------

# Set by the shell's completion function (argcomplete's): the command is run to answer
# it, with the line so far in COMP_LINE, and must print the completions and nothing else.
COMPLETING = "_ARGCOMPLETE"


def offer_completions(parser: argparse.ArgumentParser,
                      arrange: Callable[[list[str]], list[str]] | None = None) -> None:
    """When the shell asks for completions, answer from parser and end the process;
    otherwise return at once.

    argcomplete is imported only then: its import costs about 10 ms, which every command
    would otherwise pay at start-up. Nothing else happens in a completion: the command
    never runs (a daemon would start), and a completion that fails ends the process with
    nothing offered and nothing printed (with argcomplete's ``_ARC_DEBUG`` set, it says why).

    ``arrange``, if given, puts the words before the one being completed in the order
    parser reads them (submitjob takes options anywhere; argparse, before the positionals).
    """
    if COMPLETING not in os.environ:
        return
    try:
        import argcomplete

        if arrange is not None:
            _arrange_line(arrange)
        # Options are offered once a '-' is typed: an empty word completes to names.
        argcomplete.autocomplete(parser, always_complete_options=False)
    except BaseException:  # whatever went wrong, the shell gets no answer
        if os.environ.get("_ARC_DEBUG"):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(1)  # autocomplete ends the process itself when it has answered


def _arrange_line(arrange: Callable[[list[str]], list[str]]) -> None:
    """Rewrite the line argcomplete reads (COMP_LINE up to COMP_POINT) with its complete
    words arranged; the word being completed stays last, as typed."""
    import shlex

    from argcomplete.lexers import split_line

    line, point = os.environ["COMP_LINE"], int(os.environ["COMP_POINT"])
    prequote, prefix, _, words, _ = split_line(line, point)
    if not words:
        return
    arranged = arrange(words[1:])
    if arranged != words[1:]:
        line = f"{shlex.join([words[0], *arranged])} {prequote}{prefix}"
        os.environ["COMP_LINE"], os.environ["COMP_POINT"] = line, str(len(line))
