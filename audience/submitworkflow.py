# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``submitworkflow [--wait [--timeout S]] [--json] [--name N] [--label K=V]...
[--idempotency-key K] FILE [KEY=VALUE ...]``: submit the workflow a TOML file describes.

The file (``audience.workflowfile``) is read and checked before the conductor is dialled;
KEY=VALUE words override its ``[params]``, and the options its name, labels and
idempotency key, as submitjob's override a job file. The conductor checks the rest (the
steps' order, the templates, each step as a job, the policy) and runs the steps.
Options may stand anywhere on the line, as submitjob's do; ``--`` ends them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from functools import cache

from audience import completion, waiting, workflowfile
from audience.client import Client
from audience.common import JOB_MEANINGS, Parser, add_common, positive_seconds, run_command, with_client
from audience.parse import looks_like_option, split_options, takes_value
from orchestra.cli import INTERRUPTED_MEANING, ExitMeanings, visible, write_out
from orchestra.errors import ExitCode
from orchestra.joboptions import check_job_name, check_labels, parse_label
from orchestra.params import check_idempotency_key, normalize_params, parse_key_value
from orchestra.wire import audience_pb2

PROG = "submitworkflow"

EXITS: ExitMeanings = (
    (ExitCode.OK, "without --wait: the workflow is submitted; with --wait: it finished, every step ok"),
    (ExitCode.FAILED, "with --wait: the workflow finished, failed or cancelled"),
    (ExitCode.USAGE, "usage error or rejected input (a workflow file that cannot be read or is invalid,"
                     " a KEY=VALUE not among its [params], steps that do not form an order, a template"
                     " naming a step it does not come after, a step's job the conductor refuses, denied"
                     " by policy, an idempotency key reused for another request): nothing was submitted"),
    (ExitCode.PENDING, "with --wait: --timeout passed before the workflow finished"),
    (ExitCode.UNREACHABLE, JOB_MEANINGS[ExitCode.UNREACHABLE]),
    (ExitCode.NO_SUCH_JOB, "with --wait: the workflow is gone (deleted while waiting)"),
    (ExitCode.STORAGE, "the conductor cannot write its queue now (its disk is full): nothing was"
                       " submitted; retry once it has room"),
    INTERRUPTED_MEANING,
)

EPILOG = ("FILE is TOML: optional name, labels and idempotency_key; a [params] table, the"
          " workflow's own parameters (KEY=VALUE words override them, and must name one of them);"
          " and one [steps.NAME] table per step, in order. A step takes a job file's keys (score and"
          " targets required; scope, name, priority, expires, canary, batch, max_failures, [params],"
          " [labels]) plus after (the steps it comes after) and on_failure (\"stop\", the default, or"
          " \"continue\"). A step's parameter values may hold templates the conductor fills in when"
          " the step starts: {{ params.KEY }}, {{ steps.NAME.response.KEY }}, {{ steps.NAME.job_id }}"
          " and {{ workflow.id }}. It prints the workflow's id; getstatus and canceljob take it.")


@cache
def build_parser() -> Parser:
    """Built once: parsing does not change a parser."""
    parser = Parser(prog=PROG, description="Submit a workflow: steps, each a job, run in the order"
                                           " their after lists give.",
                    exit_codes=EXITS, epilog=EPILOG)
    add_common(parser)
    parser.add_argument("--wait", action="store_true",
                        help="then wait for the workflow to finish and show it, as getstatus --wait")
    for action in (
            parser.add_argument("--timeout", type=positive_seconds,
                                help="with --wait: give up after S seconds (exit 3)"),
            parser.add_argument("--name", help="the workflow's name (replaces the file's)"),
            parser.add_argument("--label", action="append", metavar="KEY=VALUE",
                                help="a label for the workflow, merged over the file's labels; repeat"
                                     " for several"),
            parser.add_argument("--idempotency-key",
                                help="a repeated key returns the workflow first submitted with it"
                                     " (replaces the file's)")):
        completion.attach(action, completion.nothing)
    parser.add_argument("file", metavar="FILE", help="the workflow file (TOML)")
    completion.attach(parser.add_argument("params", nargs="*", metavar="KEY=VALUE",
                                          help="overrides a parameter of the file's [params]"),
                      completion.nothing)
    parser.completion_order = completion_order
    return parser


def sort_words(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options (with their values) apart from FILE and the KEY=VALUE words, so options may
    stand anywhere; no parameter name starts with '-', and '--' ends the options."""
    return split_options(build_parser(), argv)


def completion_order(words: list[str]) -> list[str]:
    """The words before the one being completed, options first, as they are parsed; an
    option waiting for its value stays last."""
    waiting_value = words[-1:] if words and looks_like_option(words[-1]) \
        and takes_value(build_parser(), words[-1]) else []
    options, positionals = sort_words(words[:len(words) - len(waiting_value)])
    return words if "--" in words else [*options, *positionals, *waiting_value]


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    options, positionals = sort_words(argv)
    args = parser.parse_args([*options, "--", *positionals])
    if args.timeout is not None and not args.wait:
        parser.error("--timeout needs --wait")
    return args


def request_of(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> audience_pb2.WorkflowRequest:
    """The workflow file with the command line over it: KEY=VALUE words over its [params]
    (a key given twice is refused), --name and --idempotency-key over its values, --label
    merged over its labels key by key."""
    overrides = normalize_params([parse_key_value(word) for word in args.params])
    request = workflowfile.load(args.file, overrides, environ)
    if args.name is not None:
        request.name = check_job_name(args.name)
    if args.label:
        given = check_labels([parse_label(word) for word in args.label])
        labels = check_labels({**request.labels, **given})
        request.labels.clear()
        request.labels.update(labels)
    if args.idempotency_key is not None:
        request.idempotency_key = check_idempotency_key(args.idempotency_key) or ""
    return request


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        args = parse_command_line(words)
        request = request_of(args)
        return with_client(args.config, lambda client: submit(client, request, args))
    return run_command(PROG, body)


def submit(client: Client, request: audience_pb2.WorkflowRequest, args: argparse.Namespace) -> int:
    """Submit; print the workflow id (or one JSON object); with --wait, then wait and show
    the workflow as getstatus --wait does, exiting with its code."""
    reply = client.submit_workflow(request)
    if not args.wait:
        if args.json:
            import json  # only --json needs it

            write_out(json.dumps({"workflow_id": reply.workflow_id, "existing": reply.existing}) + "\n")
        else:
            write_out(f"{visible(reply.workflow_id)}\n")
        return int(ExitCode.OK)
    if not args.json:  # --json prints one object only; it carries workflow_id
        write_out(f"{visible(reply.workflow_id)}\n")
    return waiting.show_workflow(client, reply.workflow_id, True, args.timeout, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
