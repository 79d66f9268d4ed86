"""`hpf node doctor`: check a node's setup before (or while) it runs, and say what to fix.

On the node's host::

    hpf node doctor --config node.yaml

runs every check of :mod:`node.doctor` and prints one line per finding (its level, its stable code, what is wrong
and the fix), an ``ok`` line for each check that found nothing wrong, and a summary. It exits 0 when no problem
was found (warnings and notes allowed), 1 when one was, and as every command does for a config that cannot be
loaded (2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hpf.cli.errors import cli_errors, exit_code
from hpf.cli.serve import node_app
from hpf.federation.errors import printable

if TYPE_CHECKING:
    from hpf.node.doctor import Finding, Report


def finding_line(finding: Finding) -> str:
    """One line: level, code, what is wrong, and the fix (no control character, whatever a file held)."""
    code = f"[{finding.code}] " if finding.code else ""
    fix = f"; fix: {finding.fix}" if finding.fix else ""
    return printable(f"{finding.level:<8} {code}{finding.message}{fix}".replace("\n", " "), limit=4096)


def report_lines(report: Report) -> list[str]:
    lines = []
    for check, findings in report.checks.items():
        if not any(f.level in ("problem", "warning", "skipped") for f in findings):
            lines.append(f"{'ok':<8} {check}")
        lines += [finding_line(f) for f in findings]
    problems, warnings = report.count("problem"), report.count("warning")
    who = f"node {report.node_id}" if report.node_id else "node"
    counts = f"{problems} problem{'s' * (problems != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    verdict = "fix the problems above" if problems else "no problem found"
    lines.append(f"{who}: {verdict} ({counts})")
    return lines


@cli_errors
def node_doctor(
    config: Path = typer.Option(..., "--config", "-c", help="Node configuration (node.yaml)"),
    running: bool = typer.Option(False, "--running", help="A node that is not running is a problem, not a note"),
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds to wait for the node's health answer", min=0.1),
) -> None:
    """Check this node's config, certificates, catalog keys, policy, data sources and port; one line per problem."""
    from hpf.node.doctor import examine

    report = examine(config, running=running, timeout=timeout)
    for line in report_lines(report):
        typer.echo(line)
    if report.config_error is not None:
        raise typer.Exit(exit_code(report.config_error))
    raise typer.Exit(0 if report.healthy else 1)


def register(app: typer.Typer) -> None:
    node_app.command("doctor")(node_doctor)
