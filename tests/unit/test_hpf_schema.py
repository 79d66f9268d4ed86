"""The provident fund catalog: it validates, survives YAML, and carries the classes of hpf-data.md."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from hpf.federation.catalog import Catalog, ColumnClass
from hpf.federation.hpf_schema import TABLE_NAMES, column_types, demo_catalog, hpf_tables
from hpf.federation.regions import REGIONS, first_regions


def _addresses(n: int) -> dict[str, str]:
    return {r.node_id: f"127.0.0.1:{50051 + i}" for i, r in enumerate(first_regions(n))}


def test_demo_catalog_validates_and_survives_yaml() -> None:
    raw = demo_catalog(_addresses(8))
    catalog = Catalog.model_validate(yaml.safe_load(yaml.safe_dump(raw, allow_unicode=True)))
    assert catalog.federation == "yrd-demo"
    assert catalog.node_ids == [r.node_id for r in REGIONS[:8]]
    assert catalog.nodes[0].name == "Shanghai"
    assert set(catalog.tables) == set(TABLE_NAMES)


def test_every_region_fits_in_one_catalog() -> None:
    catalog = Catalog.model_validate(demo_catalog(_addresses(len(REGIONS)), federation="yrd-all"))
    assert len(catalog.nodes) == 41


def test_classes() -> None:
    tables = Catalog.model_validate(demo_catalog(_addresses(1))).tables
    for name, table in tables.items():
        assert table.columns["person_id"].column_class == ColumnClass.identifier
        assert table.columns["city_code"].column_class == ColumnClass.public
        for column_name, column in table.columns.items():
            if column_name in ("person_id", "city_code"):
                continue
            expected = ColumnClass.sensitive if name in ("loans", "withdrawals") else ColumnClass.public
            assert column.column_class == expected, f"{name}.{column_name}"


def test_domains() -> None:
    cols = {name: t.columns for name, t in Catalog.model_validate(demo_catalog(_addresses(1))).tables.items()}
    assert cols["deposits"]["city_code"].domain_values() == [r.code for r in REGIONS]
    assert cols["accounts"]["status"].domain_values() == ["active", "sealed", "closed"]
    assert cols["loans"]["status"].domain_values() == ["active", "settled", "overdue"]
    assert cols["withdrawals"]["reason"].domain_values() == [
        "purchase",
        "rent",
        "retirement",
        "repayment",
        "medical",
        "other",
    ]
    assert cols["accounts"]["gender"].domain_values() == ["F", "M"]
    assert cols["loans"]["term_months"].domain_values() == [60, 120, 180, 240, 300, 360]
    birth_years = cols["accounts"]["birth_year"].domain_values()
    assert birth_years is not None and birth_years[0] == 1940 and birth_years[-1] == 2010
    for table, column in [
        ("deposits", "month"),
        ("withdrawals", "date"),
        ("accounts", "open_date"),
        ("loans", "start_date"),
    ]:
        domain = cols[table][column].domain
        assert domain is not None and domain.range == (dt.date(1990, 1, 1), dt.date(2026, 12, 31))
    assert cols["deposits"]["amount_fen"].type == "BIGINT"
    assert cols["deposits"]["amount_fen"].domain is None


def test_column_types_follow_table_order() -> None:
    assert list(column_types("deposits").items()) == [
        ("person_id", "VARCHAR"),
        ("city_code", "VARCHAR"),
        ("month", "DATE"),
        ("amount_fen", "BIGINT"),
        ("employer_id", "VARCHAR"),
    ]
    assert list(column_types("loans")) == list(hpf_tables()["loans"]["columns"])


def test_unknown_node_is_refused() -> None:
    with pytest.raises(ValueError, match="not a region node id: atlantis"):
        demo_catalog({"atlantis": "127.0.0.1:1"})
