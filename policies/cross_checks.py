"""What a policy says across its fields, beyond what each value's own check sees: purposes it requires but never
declares, free-text consent it lets integrators use, and, against a catalog, tables, columns, nodes and consent
issuers the catalog lacks.

Each reads a policy as plain data, defensively: a part of the wrong shape is skipped (validation names it), so
the loader (:mod:`policies.loader`) can report these beside a file's other problems, each with its line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from hpf.federation.catalog import Catalog
from hpf.federation.config_files import field_path
from hpf.policies.asker_rules import SAME
from hpf.policies.fields import WILDCARD, Loc


def reference_problems(data: Any) -> list[tuple[Loc, str]]:
    """Purposes a role, table or lookup of ``data`` (a policy as plain data) requires that its ``purposes`` does
    not declare. Read defensively, so the loader can report them beside a file's other problems: a part of the
    wrong shape is skipped (validation names it), and nothing is checked while ``purposes`` itself is malformed.

    >>> reference_problems({"purposes": {"statistics": "..."},
    ...                     "roles": {"analyst": {"purposes": ["statistics", "audit"], "tables": {}}}})
    [(('roles', 'analyst', 'purposes', 1), "purpose 'audit' is not declared in purposes (declared: statistics)")]
    """
    problems: list[tuple[Loc, str]] = []
    if not isinstance(data, dict) or not isinstance(data.get("purposes", {}), dict):
        return problems
    declared = {code for code in data.get("purposes", {}) if isinstance(code, str)}
    known = ", ".join(sorted(declared)) or "none"

    def check(loc: Loc, codes: Any) -> None:
        for i, code in enumerate(codes if isinstance(codes, list) else []):
            if isinstance(code, str) and code not in declared:
                problems.append(((*loc, i), f"purpose {code!r} is not declared in purposes (declared: {known})"))

    roles = data.get("roles")
    for role_name, role in roles.items() if isinstance(roles, dict) else ():
        if not isinstance(role, dict):
            continue
        check(("roles", role_name, "purposes"), role.get("purposes"))
        tables = role.get("tables")
        for table_name, table in tables.items() if isinstance(tables, dict) else ():
            if isinstance(table, dict):
                check(("roles", role_name, "tables", table_name, "purposes"), table.get("purposes"))
        if isinstance(role.get("lookups"), dict):
            check(("roles", role_name, "lookups", "purposes"), role["lookups"].get("purposes"))
    return problems


# the role of banks and platforms (a certificate's role): it never works under a free-text consent reference
INTEGRATOR = "integrator"


def consent_problems(data: Any) -> list[tuple[Loc, str]]:
    """Free-text consent a policy (as plain data) lets integrators use: lookups whose ``consent`` is not ``token``
    (``required`` and ``optional`` take any string, or none), and tables with ``consent: required``; and
    integrators' lookups that leave out ``facts`` (an allow-list: left out, it would be every fact). A free-text
    reference suits a caseworker at a counter, who has seen the person and their signed form; from a bank it
    vouches for no one. Read defensively, like :func:`reference_problems`.

    >>> consent_problems({"roles": {"integrator": {"lookups": {"purposes": ["loan-review"]},
    ...                                            "tables": {"loans": {"consent": "required"}}}}})[0][0]
    ('roles', 'integrator', 'lookups')
    >>> consent_problems({"roles": {"caseworker": {"lookups": {"purposes": ["x"], "consent": "required"}}}})
    []
    >>> consent_problems({"roles": {"integrator": {"lookups": {"consent": "token"}}}})[0][1][:40]
    "integrators' lookups list the facts a ba"
    """
    problems: list[tuple[Loc, str]] = []
    roles = data.get("roles") if isinstance(data, dict) else None
    role = roles.get(INTEGRATOR) if isinstance(roles, dict) else None
    if not isinstance(role, dict):
        return problems
    lookups = role.get("lookups")
    if isinstance(lookups, dict) and lookups.get("consent", "required") != "token":
        written = "consent" in lookups
        loc: Loc = ("roles", INTEGRATOR, "lookups", *(("consent",) if written else ()))
        problems.append(
            (
                loc,
                f"integrators look people up only under each person's consent token: consent: token with "
                f"consent_issuers, not {lookups.get('consent', 'required')!r}"
                + ("" if written else " (the default)")
                + ", which takes any free-text reference",
            )
        )
    if isinstance(lookups, dict) and "facts" not in lookups:
        problems.append(
            (
                ("roles", INTEGRATOR, "lookups"),
                "integrators' lookups list the facts a bank may receive (facts: [duplicate_loans, loan_cities] for "
                "a loan review): left out, it would be every fact, balances and contributions included",
            )
        )
    tables = role.get("tables")
    for table_name, table in tables.items() if isinstance(tables, dict) else ():
        if isinstance(table, dict) and table.get("consent") == "required":
            problems.append(
                (
                    ("roles", INTEGRATOR, "tables", table_name, "consent"),
                    "integrators' aggregate questions take no free-text consent reference (an aggregate has no "
                    "one person's token): leave consent out and keep the table's answers differentially private",
                )
            )
    return problems


def catalog_problems(data: Any, where: Callable[[Loc], str], catalog: Catalog) -> list[str]:
    """Tables and columns a policy (as plain data) names that the catalog lacks, askers rules' nodes it lacks,
    and consent issuers it does not publish, each as ``FILE:LINE: path: problem`` (``where`` gives the place)."""
    problems: list[str] = []
    all_columns = {c for t in catalog.tables.values() for c in t.columns}
    roles = data.get("roles") if isinstance(data, dict) else None
    for role_name, role in roles.items() if isinstance(roles, dict) else ():
        tables = role.get("tables") if isinstance(role, dict) else None
        for table_name, table in tables.items() if isinstance(tables, dict) else ():
            if not isinstance(table_name, str) or not isinstance(table, dict):
                continue
            loc: Loc = ("roles", role_name, "tables", table_name)
            if table_name == WILDCARD:
                known = all_columns
            elif table_name not in catalog.tables:
                problems.append(
                    f"{where(loc)}: {field_path(loc)}: the catalog has no table {table_name!r}"
                    + _did_you_mean(table_name, list(catalog.tables))
                )
                continue
            else:
                known = set(catalog.tables[table_name].columns)
                privacy = table.get("privacy") or role.get("privacy")
                mode = privacy.get("mode", "exact") if isinstance(privacy, dict) else "exact"
                if mode == "dp" and catalog.tables[table_name].contribution is None:
                    problems.append(
                        f"{where(loc)}: {field_path(loc)}: answers here are differentially private, and "
                        f"table {table_name!r} of the catalog declares no contribution bound (contribution: "
                        "{person, max_rows, max_regions}), so every query on it would be refused (DP_UNBOUNDED)"
                    )
            columns = table.get("columns")
            for column in columns if isinstance(columns, dict) else ():
                if isinstance(column, str) and column not in known:
                    col_loc = (*loc, "columns", column)
                    lacks = (
                        f"no table of the catalog has a column {column!r}"
                        if table_name == WILDCARD
                        else f"table {table_name!r} of the catalog has no column {column!r}"
                    )
                    problems.append(
                        f"{where(col_loc)}: {field_path(col_loc)}: {lacks}" + _did_you_mean(column, sorted(known))
                    )
        problems += _issuer_problems(role_name, role, where, catalog)
    return problems + _asker_problems(data, where, catalog)


def _asker_problems(data: Any, where: Callable[[Loc], str], catalog: Catalog) -> list[str]:
    """Regions an ``askers`` rule names that the catalog lacks, and, where a rule admits by province, the
    catalog's nodes that no code places in one (their askers would be refused by it)."""
    problems: list[str] = []
    rules: list[tuple[Loc, Any]] = []
    askers = data.get("askers") if isinstance(data, dict) else None
    rules += [(("askers", op), rule) for op, rule in askers.items()] if isinstance(askers, dict) else []
    roles = data.get("roles") if isinstance(data, dict) else None
    for role_name, role in roles.items() if isinstance(roles, dict) else ():
        own = role.get("askers") if isinstance(role, dict) else None
        rules += (
            [(("roles", role_name, "askers", op), rule) for op, rule in own.items()] if isinstance(own, dict) else []
        )
    by_province = False
    for loc, rule in rules:
        if not isinstance(rule, dict):
            continue
        regions = rule.get("regions")
        for i, region in enumerate(regions if isinstance(regions, list) else []):
            if isinstance(region, str) and region != SAME and region not in catalog.node_ids:
                at = (*loc, "regions", i)
                problems.append(
                    f"{where(at)}: {field_path(at)}: the catalog has no node {region!r}"
                    + _did_you_mean(region, catalog.node_ids)
                )
        by_province |= bool(rule.get("provinces"))
    if by_province:
        unplaced = [n for n in catalog.node_ids if catalog.region_code(n) is None]
        if unplaced:
            loc = next(loc for loc, rule in rules if isinstance(rule, dict) and rule.get("provinces"))
            problems.append(
                f"{where(loc)}: {field_path(loc)}: admits askers by province, and the catalog gives node(s) "
                f"{', '.join(unplaced)} no code, so askers from them are in no province and refused: give each "
                'node its 6-digit region code (code: "320500") in the catalog'
            )
    return problems


def _issuer_problems(role_name: str, role: Any, where: Callable[[Loc], str], catalog: Catalog) -> list[str]:
    """Consent issuers a role's lookups accept that the catalog does not publish (no key: no token would hold)."""
    lookups = role.get("lookups") if isinstance(role, dict) else None
    issuers = lookups.get("consent_issuers") if isinstance(lookups, dict) else None
    published = sorted(i.id for i in catalog.issuers)
    problems = []
    for n, issuer in enumerate(issuers if isinstance(issuers, list) else ()):
        if isinstance(issuer, str) and issuer not in published:
            loc: Loc = ("roles", role_name, "lookups", "consent_issuers", n)
            problems.append(
                f"{where(loc)}: {field_path(loc)}: the catalog publishes no consent issuer {issuer!r}"
                + _did_you_mean(issuer, published)
            )
    return problems


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
