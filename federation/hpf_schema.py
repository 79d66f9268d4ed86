"""The housing provident fund tables every node holds, as a catalog ``tables:`` section.

The four tables of ``design/hpf-data.md``: ``accounts``, ``deposits`` (缴存), ``withdrawals`` (提取) and
``loans`` (贷款). Money is integer fen in BIGINT columns. ``person_id`` is an identifier everywhere; loans and
withdrawals are sensitive except ``city_code``; accounts and deposits are public-attribute data.

The synthetic generator (:mod:`hpf.demo.synth`) writes exactly these column names, order and types.

>>> from hpf.federation.catalog import Catalog
>>> Catalog.model_validate(demo_catalog({"shanghai": "127.0.0.1:50051"})).node_ids
['shanghai']
"""

from __future__ import annotations

from typing import Any

from hpf.federation.regions import BY_NODE_ID, REGIONS

ACCOUNT_STATUSES: tuple[str, ...] = ("active", "sealed", "closed")
LOAN_STATUSES: tuple[str, ...] = ("active", "settled", "overdue")
WITHDRAWAL_REASONS: tuple[str, ...] = ("purchase", "rent", "retirement", "repayment", "medical", "other")
GENDERS: tuple[str, ...] = ("F", "M")
TERM_MONTHS: tuple[int, ...] = (60, 120, 180, 240, 300, 360)
DATE_RANGE: tuple[str, str] = ("1990-01-01", "2026-12-31")
BIRTH_YEAR_RANGE: tuple[int, int] = (1940, 2010)
TABLE_NAMES: tuple[str, ...] = ("accounts", "deposits", "withdrawals", "loans")

Spec = dict[str, Any]


def _col(
    type_: str,
    cls: str = "public",
    *,
    values: list[Any] | None = None,
    range_: tuple[Any, Any] | None = None,
    description: str | None = None,
) -> Spec:
    """One column entry in catalog form."""
    spec: Spec = {"type": type_, "class": cls}
    if values is not None:
        spec["domain"] = {"values": list(values)}
    elif range_ is not None:
        spec["domain"] = {"range": list(range_)}
    if description:
        spec["description"] = description
    return spec


def _person_id() -> Spec:
    return _col("VARCHAR", "identifier", description="18-character resident identity number")


def _city_code() -> Spec:
    return _col("VARCHAR", values=[r.code for r in REGIONS], description="6-digit code of the node's city")


def _date(cls: str, description: str) -> Spec:
    return _col("DATE", cls, range_=DATE_RANGE, description=description)


def _fen(cls: str, description: str, high_yuan: int) -> Spec:
    """A money column; ``high_yuan`` bounds one row's value under differential privacy (values above it are
    clamped to it there, and only there)."""
    spec = _col("BIGINT", cls, description=f"{description}, integer fen (1/100 yuan)")
    return {**spec, "bounds": [0, high_yuan * 100]}


# one person's share of each table under differential privacy: rows per region, and regions (about 8% of people
# hold accounts in two cities; four covers the movers the federation sees)
MAX_REGIONS_PER_PERSON = 4


def _contribution(max_rows: int, prefer: str) -> Spec:
    """Each person's ``max_rows`` rows per region with the latest ``prefer`` date count under DP."""
    return {"person": "person_id", "max_rows": max_rows, "max_regions": MAX_REGIONS_PER_PERSON, "prefer": prefer}


def hpf_tables() -> dict[str, Any]:
    """The ``tables:`` section of a catalog: plain dicts, ready for ``yaml.safe_dump``."""
    s = "sensitive"
    return {
        "accounts": {
            "contribution": _contribution(1, "open_date"),
            "description": "one row per person per city account",
            "columns": {
                "person_id": _person_id(),
                "city_code": _city_code(),
                "employer_id": _col("VARCHAR", description="current employer"),
                "open_date": _date("public", "day the account was opened"),
                "status": _col("VARCHAR", values=list(ACCOUNT_STATUSES), description="sealed = 封存"),
                "balance_fen": _fen("public", "balance", 2_000_000),
                "monthly_deposit_fen": _fen("public", "latest monthly contribution", 20_000),
                "gender": _col("VARCHAR", values=list(GENDERS)),
                "birth_year": _col("INTEGER", range_=BIRTH_YEAR_RANGE),
            },
        },
        "deposits": {
            "contribution": _contribution(120, "month"),  # the latest decade of monthly contributions per region
            "description": "one row per person per month contributed (缴存)",
            "columns": {
                "person_id": _person_id(),
                "city_code": _city_code(),
                "month": {
                    **_date("public", "first day of the month contributed"),
                    "domain": {"range": list(DATE_RANGE), "step": "month"},
                },
                "amount_fen": _fen("public", "employee plus employer share", 10_000),
                "employer_id": _col("VARCHAR", description="employer that month"),
            },
        },
        "withdrawals": {
            "contribution": _contribution(120, "date"),
            "description": "withdrawals from an account (提取)",
            "columns": {
                "person_id": _person_id(),
                "city_code": _city_code(),
                "date": _date(s, "day of the withdrawal"),
                "amount_fen": _fen(s, "amount withdrawn", 1_000_000),
                "reason": _col("VARCHAR", s, values=list(WITHDRAWAL_REASONS)),
            },
        },
        "loans": {
            "contribution": _contribution(4, "start_date"),
            "description": "housing loans (贷款)",
            "columns": {
                "loan_id": _col("VARCHAR", s, description="loan number, unique in the federation"),
                "person_id": _person_id(),
                "city_code": _city_code(),
                "start_date": _date(s, "day the loan was granted"),
                "principal_fen": _fen(s, "amount lent", 2_000_000),
                "outstanding_fen": _fen(s, "principal still owed", 2_000_000),
                "term_months": _col("INTEGER", s, values=list(TERM_MONTHS)),
                "status": _col("VARCHAR", s, values=list(LOAN_STATUSES)),
            },
        },
    }


def column_types(table: str) -> dict[str, str]:
    """``{column: type}`` of one table, in file column order."""
    return {name: spec["type"] for name, spec in hpf_tables()[table]["columns"].items()}


# the demo federation's consent service (Shanghai's centre runs it for the delta): the issuer whose tokens the
# default policy takes for integrators' lookups (policies/default.yaml, consent_issuers)
DEMO_CONSENT_ISSUER = "shanghai-consent"


def demo_catalog(
    node_addresses: dict[str, str],
    federation: str = "yrd-demo",
    audit_keys: dict[str, str] | None = None,
    agreement_keys: dict[str, str] | None = None,
    issuers: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A complete catalog dict for regional nodes ``{node_id: "host:port"}`` (ids from ``regions.py``, each with its
    region code), with each node's audit and agreement public keys where ``audit_keys`` and ``agreement_keys``
    give them, and the consent ``issuers`` it publishes (``{"id", "key"}`` each)."""
    unknown = sorted(set(node_addresses) - set(BY_NODE_ID))
    if unknown:
        raise ValueError(f"not a region node id: {', '.join(unknown)} (see federation/regions.py)")
    keys, agreement = audit_keys or {}, agreement_keys or {}
    nodes = [
        {"id": node_id, "address": address, "name": BY_NODE_ID[node_id].name, "code": BY_NODE_ID[node_id].code}
        | ({"audit_key": keys[node_id]} if node_id in keys else {})
        | ({"agreement_key": agreement[node_id]} if node_id in agreement else {})
        for node_id, address in node_addresses.items()
    ]
    catalog: dict[str, Any] = {"federation": federation, "nodes": nodes, "tables": hpf_tables()}
    if issuers:
        catalog["issuers"] = issuers
    return catalog
