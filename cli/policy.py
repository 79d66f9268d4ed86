"""`hpf policy check FILE` and `hpf policy show [FILE]`: a node's policy file, validated and made plain.

FILE is a path, or a packaged policy: ``hpf:base`` (the table-agnostic base) or ``hpf:default`` (the demo's).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hpf.cli.errors import exit_code
from hpf.federation.errors import ConfigError, FederationError
from hpf.policies import DEFAULT_POLICY

if TYPE_CHECKING:
    from hpf.policies.model import Policy

policy_app = typer.Typer(help="Node policies: who may ask what.", no_args_is_help=True)


def _problems(lines: list[str], code: str, hint: str | None) -> int:
    """Each problem as ``error: FILE:LINE: ...`` on stderr, then the code and hint; the exit code."""
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    tail = f"{len(lines)} problem(s) [{code}]"
    typer.echo(tail + (f"; hint: {hint}" if hint else ""), err=True)
    return 2


def _load(path: Path) -> Policy:
    from hpf.policies.loader import load_policy

    try:
        return load_policy(path)
    except FederationError as err:
        code = _problems(err.message.splitlines(), err.code, err.hint) if isinstance(err, ConfigError) else None
        raise typer.Exit(code if code is not None else exit_code(err)) from None


@policy_app.command("check")
def check(
    path: Path = typer.Argument(..., help="Policy file (e.g. one that says extends: hpf:base), or hpf:NAME"),
    catalog: Path | None = typer.Option(None, "--catalog", help="Also check the tables and columns it names"),
) -> None:
    """Validate a policy file (and its extends chain), and report every problem, each naming its file and line.
    Exit 2 if any."""
    from hpf.federation.catalog import load_catalog
    from hpf.policies.loader import check_policy

    against, unreadable = None, None
    if catalog is not None:
        try:
            against = load_catalog(catalog)
        except ConfigError as err:  # reported with the policy's own problems, which need no catalog
            unreadable = err
    try:
        checked = check_policy(path, against)
    except FederationError as err:
        status = _problems(err.message.splitlines(), err.code, err.hint) if isinstance(err, ConfigError) else None
        raise typer.Exit(status if status is not None else exit_code(err)) from None
    lines, hints = list(checked.problems), list(checked.hints)
    if unreadable is not None:
        lines += unreadable.message.splitlines()
        hints += [unreadable.hint] if unreadable.hint else []
    if lines or checked.policy is None:
        code = "POLICY_FILE_INVALID" if checked.problems or unreadable is None else unreadable.code
        raise typer.Exit(_problems(lines, code, "; ".join(hints) or None))
    policy = checked.policy
    against_note = f", checked against {catalog}" if catalog is not None else ""
    typer.echo(f"{path}: ok: {len(policy.roles)} role(s), {len(policy.purposes)} purpose(s){against_note}")
    for line in policy.summary():
        typer.echo(f"  {line}")


@policy_app.command("show")
def show(
    path: Path = typer.Argument(
        DEFAULT_POLICY, help="Policy file, or hpf:base / hpf:default (default: the packaged default policy)"
    ),
) -> None:
    """Print the effective policy (its extends chain merged) as YAML."""
    policy = _load(path)
    typer.echo(f"# effective policy of {path}")
    typer.echo(_yaml(policy.plain()), nl=False)


def _yaml(doc: object) -> str:
    """``doc`` as YAML, lists of plain values on one line (``[filter, group]``) as the policy files write them."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def plain_list(dumper: yaml.SafeDumper, data: list[object]) -> yaml.Node:
        flow = all(not isinstance(x, dict | list) for x in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    Dumper.add_representer(list, plain_list)
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=110)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
