"""Markers by place and cost, and the Hypothesis profiles.

Every test is marked ``unit`` (tests/unit: one process, no server) or ``integration`` (tests/integration: real
nodes, coordinators and clients on loopback ports); the tests listed in :data:`SLOW` are marked ``slow`` too.
The quick subset a developer runs while working is ``pytest -m "unit and not slow"`` under the ``dev`` Hypothesis
profile (``HYPOTHESIS_PROFILE=dev``), which draws a tenth of the examples; CI and the README's test command run
everything under the thorough ``ci`` profile, the default.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci")  # Hypothesis's defaults, and each test's own example count
settings.register_profile("dev", max_examples=10)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

TESTS = Path(__file__).resolve().parent
# files whose tests take more than a few seconds each on this project's 2-core machine (a whole demo, a bench-like
# load, many federations, or a fuzzer)
SLOW = frozenset(
    {
        "integration/test_bad_input_fuzz.py",
        "integration/test_concurrency.py",
        "integration/test_demo.py",
        "integration/test_demo_postgres.py",
        "integration/test_demo_spark.py",
        "integration/test_differencing.py",
        "integration/test_differential_privacy.py",
        "integration/test_federated_property.py",
        "integration/test_large_layouts.py",
        "integration/test_mixed_backends_property.py",
        "integration/test_multi_host.py",
        "integration/test_postgres_render.py",
        "integration/test_postgres_backend.py",
        "integration/test_backend_lookups.py",
        "integration/test_postgres_faults.py",
        "integration/test_postgres_node.py",
        "integration/test_readme_commands.py",
        "integration/test_spark_backend.py",
        "integration/test_spark_federation.py",
        "integration/test_spark_faults.py",
        "integration/test_spark_render.py",
        "integration/test_stalled_region.py",
        "integration/test_wheel.py",
        "unit/test_lint.py",  # mypy over the whole tree
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = Path(str(item.fspath)).resolve().relative_to(TESTS).as_posix()
        item.add_marker(pytest.mark.unit if where.startswith("unit/") else pytest.mark.integration)
        if where in SLOW:
            item.add_marker(pytest.mark.slow)


from pg import pg_database  # noqa: E402,F401  (the session's own PostgreSQL database, see tests/pg.py)
from spark import spark_session  # noqa: E402,F401  (the run's one local Spark session, see tests/spark.py)
