"""`raman-client`: the command line on top of `RamanClient`.

    raman-client identify FILES_OR_FOLDERS... [--top-k 5] [--url URL] [--json]
    raman-client models | jobs | job ID [--log] | cancel ID
    raman-client finetune ARCHIVE --base-model NAME [--epochs N] [--wait]

The URL and API key default to `$RAMAN_URL` and `$RAMAN_API_KEY`. Exit status: 0 on success,
1 when the server refused a request, a file could not be used or a job failed, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from raman_client.client import DEFAULT_URL, RamanClient
from raman_client.errors import RamanAPIError, RamanError
from raman_client.files import expand_paths
from raman_client.table import jobs_table, models_table, progress_text, results_table
from raman_client.types import Job

Command = Callable[[RamanClient, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with RamanClient(args.url, args.api_key, timeout=args.timeout, retries=args.retries) as c:
            return int(args.run(c, args))
    except RamanAPIError as exc:
        print(f"error: {exc.title} ({exc.status}): {exc.detail}", file=sys.stderr)
    except (RamanError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 1


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command. After it, their defaults are suppressed,
    so that `--api-key K jobs` is not undone by the command's own (default) value."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=default(None), help=f"service URL ($RAMAN_URL, else {DEFAULT_URL})"
    )
    common.add_argument(
        "--api-key", default=default(None), help="API key for fine-tune jobs ($RAMAN_API_KEY)"
    )
    common.add_argument(
        "--timeout", type=float, default=default(60.0), help="seconds per request (60)"
    )
    common.add_argument(
        "--retries", type=int, default=default(4), help="retries on 429/503/connection failures (4)"
    )
    common.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON instead of a table"
    )
    return common  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raman-client", description=__doc__.splitlines()[0],
                                     parents=[common_options(suppress=False)])  # fmt: skip
    common = common_options(suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _identify_parser(sub.add_parser("identify", parents=[common], help="identify spectrum files"))
    sub.add_parser("models", parents=[common], help="list models").set_defaults(run=cmd_models)
    sub.add_parser("jobs", parents=[common], help="list fine-tune jobs").set_defaults(run=cmd_jobs)
    job = sub.add_parser("job", parents=[common], help="show one fine-tune job")
    job.add_argument("job_id")
    job.add_argument("--log", action="store_true", help="print the job's log")
    job.set_defaults(run=cmd_job)
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a fine-tune job")
    cancel.add_argument("job_id")
    cancel.set_defaults(run=cmd_cancel)
    _finetune_parser(sub.add_parser("finetune", parents=[common], help="start a fine-tune job"))
    return parser


def _identify_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="FILE", help="spectrum files or folders")
    p.add_argument("--top-k", type=int, default=5, help="hits per spectrum (5)")
    p.add_argument("--model", help="model name (the server's default when omitted)")
    p.add_argument("--version", dest="model_version", help="model version (the active one)")
    p.add_argument("--batch", type=int, default=32, help="files per request (32)")
    p.add_argument("--no-recursive", action="store_true", help="do not descend into subfolders")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None,
        help="progress bar on stderr (default: on a terminal, for many files)",
    )  # fmt: skip
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(run=cmd_identify)


def _finetune_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="zip or tar archive of labelled spectrum files")
    p.add_argument("--base-model", help="model to start from (the server's default)")
    p.add_argument("--base-version", help="version to start from (the active one)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--freeze", choices=["none", "features", "all_but_last"])
    p.add_argument("--output-model", help="register the new version under this name")
    p.add_argument("--activate", action="store_true", help="switch to the new version when done")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyper-parameter (repeatable): --set learning_rate=3e-4")  # fmt: skip
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls with --wait")
    p.set_defaults(run=cmd_finetune)


def cmd_identify(client: RamanClient, args: argparse.Namespace) -> int:
    files = expand_paths(args.paths, recursive=not args.no_recursive)
    if not files:
        raise ValueError("no spectrum files found in " + ", ".join(args.paths))
    progress = args.progress
    if progress is None:  # folders get a bar when a person is watching
        progress = sys.stderr.isatty() and len(files) > args.batch
    results = client.identify_files(files, args.top_k, args.model, args.model_version,
                                    batch=args.batch, progress=progress)  # fmt: skip
    _emit(args, [dataclasses.asdict(r) for r in results], lambda: results_table(results))
    return 1 if any(not r.ok for r in results) else 0


def cmd_models(client: RamanClient, args: argparse.Namespace) -> int:
    models = client.models()
    _emit(args, [dataclasses.asdict(m) for m in models], lambda: models_table(models))
    return 0


def cmd_jobs(client: RamanClient, args: argparse.Namespace) -> int:
    jobs = client.jobs()
    _emit(args, [j.raw for j in jobs], lambda: jobs_table(jobs))
    return 0


def cmd_job(client: RamanClient, args: argparse.Namespace) -> int:
    if args.log:
        print(client.job_log(args.job_id).text, end="")
        return 0
    job = client.job(args.job_id)
    _emit(args, job.raw, lambda: jobs_table([job]))
    return 0


def cmd_cancel(client: RamanClient, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    _emit(args, job.raw, lambda: jobs_table([job]))
    return 0


def cmd_finetune(client: RamanClient, args: argparse.Namespace) -> int:
    options: dict[str, Any] = dict(_key_value(kv) for kv in args.set)
    options |= {
        k: v for k, v in (("epochs", args.epochs), ("freeze", args.freeze)) if v is not None
    }
    job = client.finetune(args.archive, base_model=args.base_model,
                          base_version=args.base_version, output_model=args.output_model,
                          activate=args.activate or None, **options)  # fmt: skip
    print(f"started job {job.id} ({job.state})", file=sys.stderr)
    if args.wait:
        job = client.wait(job.id, poll=args.poll, on_update=_report)
    _emit(args, job.raw, lambda: jobs_table([job]))
    return 0 if not args.wait or job.succeeded else 1


def _report(job: Job) -> None:
    print(f"  {job.state:<10} {progress_text(job.progress):>5}  {job.stage}", file=sys.stderr)


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers and booleans keep their type
    except ValueError:
        return key, value


def _emit(args: argparse.Namespace, payload: Any, render: Callable[[], str]) -> None:
    print(json.dumps(payload, indent=2) if args.json else render())


if __name__ == "__main__":
    sys.exit(main())
