"""What differential privacy asks of a node for one question: its terms, the budget charge, the noisy computation.

The policy decides whether an answer is exact or DP (:class:`policies.model.Privacy`); here the DP terms are
derived from the plan and the catalog (:func:`federation.privacy.dp_plan.dp_terms`, the same on every party), the
asker's budget on this node is charged before anything is computed and given back if no answer leaves, and the clamped
plan over the capped table is prepared with this node's noise share for the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hpf.federation.catalog import Catalog
from hpf.federation.errors import PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.plan import Plan
from hpf.federation.privacy.dp_plan import DpTerms, capped_table_sql, dp_plan, dp_terms
from hpf.federation.trust import statements
from hpf.node.executor import Noisy
from hpf.node.privacy_budget import Budget, PrivacyLedger
from hpf.node.protection import Protector, Run
from hpf.policies.engine import Decision
from hpf.policies.model import Privacy


def signed_terms(terms: DpTerms | None) -> dict[str, Any]:
    """The privacy terms a region signs (and binds its masks to): exact, or DP with its noise."""
    return statements.EXACT if terms is None else {"mode": "dp", **terms.canonical()}


def _budget(privacy: Privacy) -> Budget:
    assert privacy.budget is not None
    return Budget(privacy.budget.epsilon, privacy.budget.delta, privacy.budget.period)


class PrivacyAccountant:
    def __init__(self, node_id: str, catalog: Catalog, ledger: PrivacyLedger | None) -> None:
        self.node_id = node_id
        self.catalog = catalog
        self.ledger = ledger

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()

    def terms(self, plan: Plan, decision: Decision) -> DpTerms | None:
        """The DP terms of an answer to ``plan`` (None when the policy makes it exact); DP_UNBOUNDED if the
        catalog does not bound what one person can change."""
        privacy = decision.privacy
        if privacy.mode != "dp":
            return None
        assert privacy.epsilon is not None
        return dp_terms(plan, self.catalog, privacy.epsilon, privacy.delta, privacy.threshold, privacy.threshold_sd)

    def charge(self, identity: str, decision: Decision) -> Callable[[], None]:
        """Charge one DP answer to ``identity``'s budget here; returns what gives it back if no answer leaves."""
        privacy = decision.privacy
        assert privacy.epsilon is not None
        if self.ledger is None:
            raise PlanError("this region keeps no privacy budget ledger", code="DP_UNSUPPORTED")
        ledger, budget = self.ledger, _budget(privacy)
        epsilon, delta, now = privacy.epsilon, privacy.delta, time.time()
        rule = f"{decision.privacy_rule}.budget"
        ledger.charge(identity, epsilon, delta, budget, rule=rule, party=self.node_id, now=now)
        return lambda: ledger.refund(identity, epsilon, delta, budget, now=now)  # into the period it was charged to

    def noisy(self, plan: Plan, run: Run, terms: DpTerms, protector: Protector) -> Noisy:
        """The DP computation of ``plan`` for ``run``: clamped plan, capped table, units, this node's noise."""
        clamped, source = dp_plan(plan, self.catalog)
        capped = capped_table_sql(plan.table, self.catalog.tables[plan.table])
        noise = protector.noise(run, terms, plan.layout.cells)
        return Noisy(clamped, source, capped, [c.unit for c in terms.components], noise)

    def verdict(self, plan: Plan, identity: str, decision: Decision) -> pb.PrivacyVerdict:
        """What an answer would carry and cost (for ``--explain``): exact, or DP with its noise and the budget
        ``identity`` has left here."""
        privacy = decision.privacy
        verdict = pb.PrivacyVerdict(mode=privacy.mode, rule=f"{self.node_id}: {decision.privacy_rule}")
        terms = self.terms(plan, decision)
        if terms is None:
            return verdict
        assert privacy.budget is not None
        verdict.epsilon, verdict.delta, verdict.threshold = terms.epsilon, terms.delta, terms.threshold
        verdict.noise_sd.extend(c.sd for c in terms.components)
        verdict.budget_epsilon, verdict.budget_period = privacy.budget.epsilon, privacy.budget.period
        if self.ledger is not None:
            spent = self.ledger.spent(identity, _budget(privacy))
            verdict.budget_spent, verdict.budget_renews = spent.epsilon, spent.period_end
        return verdict
