"""What `hpf demo` runs: the data, the configs and the parties, then the checked examples or serving until
interrupted (:mod:`demo.examples`, :mod:`demo.lookups`)."""

from __future__ import annotations

import signal
import threading

import typer

from hpf.demo.examples import EXAMPLES, run_examples
from hpf.demo.launcher import DemoLayout, Progress, ensure_data, running_parties, write_configs
from hpf.demo.lookups import ready_lines, run_lookups
from hpf.demo.renderers import Renderers


def run_demo(
    layout: DemoLayout, rows: int, seed: int, base_port: int, once: bool, say: Progress, renderers: Renderers
) -> bool:
    """Start the demo federation in ``layout``; with ``once``, run the examples and lookups and stop (True when
    every answer checks out), else print the commands to try and serve until SIGINT or SIGTERM (True)."""
    ensure_data(layout, rows, seed, say)
    write_configs(layout, base_port)
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
