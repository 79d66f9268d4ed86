"""What `hpf demo` runs: the data, the configs and the parties, then the checked examples or serving until
interrupted (:mod:`demo.examples`, :mod:`demo.lookups`)."""

from __future__ import annotations

import signal
import threading

import typer

from hpf.demo.examples import EXAMPLES, run_examples
from hpf.demo.launcher import DemoLayout, Progress, ensure_data, running_parties, write_configs
from hpf.demo.lookups import ready_lines, run_lookups
from hpf.demo.postgres import (
    DEFAULT_POSTGRES,
    backend_lines,
    demo_database,
    drop_demo_database,
    load_regions,
    make_database,
)
from hpf.demo.renderers import Renderers
from hpf.federation.errors import FederationError


def run_demo(
    layout: DemoLayout,
    rows: int,
    seed: int,
    base_port: int,
    once: bool,
    say: Progress,
    renderers: Renderers,
    postgres: str = DEFAULT_POSTGRES,
) -> bool:
    """Start the demo federation in ``layout``; with ``once``, run the examples and lookups and stop (True when
    every answer checks out), else print the commands to try and serve until SIGINT or SIGTERM (True).

    The regions ``layout`` puts on PostgreSQL read a database the demo makes on the server the admin connection
    string ``postgres`` reaches, and drops when it stops (:mod:`demo.postgres`)."""
    made = False
    try:
        if "postgres" in layout.backends.values():
            make_database(layout, postgres, say)  # first: a server out of reach is said before anything is made
            made = True
        ensure_data(layout, rows, seed, say)
        if made:
            load_regions(layout, say)
        write_configs(layout, base_port)
        for line in backend_lines(layout):
            say(line)
        return _run(layout, rows, seed, once, renderers, say)
    finally:
        if made:
            _drop_database(layout, postgres, say)


def _drop_database(layout: DemoLayout, postgres: str, say: Progress) -> None:
    name = demo_database(layout.data)
    layout.dsn_file.unlink(missing_ok=True)
    try:
        drop_demo_database(postgres, layout.data)
    except FederationError as err:  # said, not raised: it would hide why the demo stopped
        say(f"PostgreSQL: the database {name} was not dropped: {err}")
        return
    say(f"PostgreSQL: dropped the database {name}")


def _run(layout: DemoLayout, rows: int, seed: int, once: bool, renderers: Renderers, say: Progress) -> bool:
    with running_parties(layout, say):
        if once:
            ok = run_examples(layout, renderers)
            ok &= run_lookups(layout, rows, seed, renderers)
            return ok
        for line in ready_lines(layout, rows, seed, EXAMPLES[0].sql):
            typer.echo(line, err=False)
        typer.echo("serving; press Ctrl-C to stop", err=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        typer.echo("stopping", err=True)
    return True
