"""The ``asya`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from .client import call_tool, cancel_job, list_jobs
from .dev import Options, run_dev
from .errors import ClientError, DevError, Interrupted
from .pipeline import PipelineError, load_pipeline

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Asya: asynchronous actors for AI pipelines."
)
out = Console()
err = Console(stderr=True)
DEFAULT_URL = "http://127.0.0.1:8000"


def _fail(message: str, hint: str, code: int = 1) -> NoReturn:
    # soft_wrap: a long message or hint (a command to copy) is never broken across lines
    err.print(
        f"[bold red]error:[/] {message}\n[dim]hint:[/] {hint}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def _interrupted(exc: Interrupted, url: str) -> NoReturn:
    """Ctrl-C during ``asya call``: the job goes on; say which one and how to stop it."""
    if exc.job_id is None:
        _fail("interrupted before the gateway created a job", "asya jobs shows any job", 130)
    where = "" if url == DEFAULT_URL else f" --url {url}"
    _fail(
        f"interrupted; job {exc.job_id} goes on running on the gateway",
        f"to stop it: asya cancel {exc.job_id}{where}",
        130,
    )


@app.command()
def dev(
    pipeline: Annotated[Path, typer.Argument(help="the pipeline file (actors and tools)")],
    port: Annotated[int, typer.Option(help="the gateway's port on 127.0.0.1")] = 8000,
    rabbitmq_url: Annotated[
        str | None, typer.Option(help="use this RabbitMQ instead of the in-process broker")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="use this database instead of SQLite")
    ] = None,
) -> None:
    """Run a pipeline on this machine: runtimes, sidecars and the gateway."""
    try:
        loaded = load_pipeline(pipeline)
    except PipelineError as exc:
        _fail(str(exc), "see the pipeline file format in docs/quickstart.md")
    try:
        asyncio.run(
            run_dev(
                loaded,
                Options(port=port, rabbitmq_url=rabbitmq_url, database_url=database_url),
                lambda line: out.print(line, highlight=False),
            )
        )
    except DevError as exc:
        _fail(str(exc), exc.hint)


class PartialWriter:
    """Writes partial results to stdout as they come: a string as it is (a stream of tokens reads
    as text), any other value as one JSON line. :meth:`end_line` ends a line left open."""

    def __init__(self) -> None:
        self.written = False
        self._open = False

    def __call__(self, chunks: list[Any]) -> None:
        for chunk in chunks:
            if isinstance(chunk, str):
                sys.stdout.write(chunk)
                self._open = (bool(chunk) and not chunk.endswith("\n")) or (
                    self._open and not chunk
                )
            else:
                self.end_line()
                sys.stdout.write(json.dumps(chunk) + "\n")
            self.written = True
        sys.stdout.flush()

    def end_line(self) -> None:
        if self._open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._open = False


def _follow(
    url: str, token: str | None, tool: str, arguments: Any, partials: PartialWriter
) -> dict[str, Any]:
    """``call_tool`` with a progress bar on a terminal, plain progress lines otherwise; partial
    results are written as they come, and replace the bar or the lines (a progress event that
    comes later, e.g. a step's held ``started``, would cut the text)."""
    if not sys.stdout.isatty():

        def plain(value: float, what: str) -> None:
            if partials.written:  # the text is the progress now, as on a terminal: not cut
                return
            print(f"progress {value:4.0%} {what}", flush=True)

        def started(job: dict[str, Any]) -> None:
            print(f"job {job['id']} {job['status']}", flush=True)

        return call_tool(url, token, tool, arguments, plain, started, partials)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=out,
        transient=True,
    ) as progress:
        task = progress.add_task(tool, total=1.0)

        def show(value: float, what: str) -> None:
            if not partials.written:
                progress.update(task, completed=value, description=f"{tool}: {what}")

        def started(job: dict[str, Any]) -> None:
            progress.update(task, description=f"{tool} (job {job['id']})")

        def streamed(chunks: list[Any]) -> None:
            if not partials.written:
                progress.stop()  # the text takes the bar's place
            partials(chunks)

        return call_tool(url, token, tool, arguments, show, started, streamed)


@app.command()
def call(
    tool: Annotated[str, typer.Argument(help="the tool to call")],
    arguments: Annotated[str, typer.Argument(help="its arguments, as JSON")] = "{}",
    url: Annotated[str, typer.Option(envvar="ASYA_URL", help="the gateway")] = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="ASYA_TOKEN", help="a bearer token")] = None,
) -> None:
    """Start a job, show its progress, print its result (Ctrl-C: its id, for asya cancel)."""
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        _fail(
            f"arguments are not JSON: {exc}",
            'quote them: asya call tool \'{"text": "Hello world"}\'',
        )
    partials = PartialWriter()
    try:
        job = _follow(url, token, tool, parsed, partials)
    except ClientError as exc:
        partials.end_line()
        _fail(str(exc), exc.hint)
    except Interrupted as exc:
        partials.end_line()
        _interrupted(exc, url)
    partials.end_line()
    if job["status"] == "succeeded":
        out.print_json(data=job["result"])
        return
    err.print(
        f"[bold red]job {job['id']} {job['status']}:[/] {json.dumps(job.get('error'))}",
        highlight=False,
    )
    raise typer.Exit(1)


@app.command()
def jobs(
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    tool: Annotated[str | None, typer.Option(help="only jobs of this tool")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    url: Annotated[str, typer.Option(envvar="ASYA_URL", help="the gateway")] = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="ASYA_TOKEN", help="a bearer token")] = None,
) -> None:
    """List jobs."""
    try:
        items = list_jobs(url, token, status, tool, limit)
    except ClientError as exc:
        _fail(str(exc), exc.hint)
    table = Table("id", "tool", "status", "progress", "created")
    for job in items:
        table.add_row(
            job["id"],
            job["tool"],
            job["status"],
            f"{(job.get('progress') or 0):.0%}",
            job["created_at"][:19],
        )
    out.print(table)


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="the job's id (asya jobs lists them)")],
    url: Annotated[str, typer.Option(envvar="ASYA_URL", help="the gateway")] = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(envvar="ASYA_TOKEN", help="a bearer token")] = None,
) -> None:
    """Cancel a pending or running job; print its new status."""
    try:
        job = cancel_job(url, token, job_id)
    except ClientError as exc:
        _fail(str(exc), exc.hint)
    out.print(f"job {job['id']} {job['status']}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
