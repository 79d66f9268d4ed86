"""A node's Prometheus metrics, in a registry of its own: its requests (:class:`federation.metrics.RequestMetrics`),
the entries it appended to its audit log, and the charges its privacy budgets refused. Nothing here names an
identity, a question or a value: counts, by operation and stable code only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from hpf.federation.metrics import RequestMetrics


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics(self.registry)
        self.audit_appends = Counter(
            "hpf_audit_appends",
            "Entries appended to this node's audit log (allowed and refused)",
            registry=self.registry,
        )
        self.budget_refusals = Counter(
            "hpf_budget_refusals", "Answers refused because a privacy budget was spent", registry=self.registry
        )
