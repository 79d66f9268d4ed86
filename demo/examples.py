"""`hpf demo --once`: the example queries, each checked against DuckDB over the pooled files, and the audit logs.

The exact answers (the operator's, for the purpose statistics: the one role the default policy answers exactly)
must equal DuckDB's over the pooled files (for the groups no region withheld), every DP answer (the caseworker's,
the analyst's, the bank's) must lie within DP_TOLERANCE_SD stated noise sd of DuckDB over the files clamped as
the regions clamp them, and every refusal must be one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import typer

from hpf.client.answers import ExplainAnswer, QueryAnswer
from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.demo.launcher import DemoLayout
from hpf.demo.oracle import clamped_totals, matches, noisy_cells, pooled, withheld_groups
from hpf.demo.renderers import Renderers, TextTable
from hpf.federation.audit.keys import load_public_key
from hpf.federation.audit.verify import verify_log
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.errors import FederationError
from hpf.federation.plan import Plan
from hpf.policies.engine import Asker, check_query
from hpf.policies.loader import load_policy
from hpf.policies.model import Policy


@dataclass(frozen=True)
class Example:
    title: str
    person: str  # a demo person (see demo_people): their certificate signs the question
    purpose: str
    sql: str
    consent: str = ""


EXAMPLES: tuple[Example, ...] = (
    Example(
        "Active accounts and balances per city (operator, purpose statistics: exact)",
        "operator",
        "statistics",
        "SELECT city_code, COUNT(*) AS accounts, SUM(balance_fen) AS balance_fen FROM accounts "
        "WHERE status = 'active' GROUP BY city_code ORDER BY city_code",
    ),
    Example(
        "Contributions per year since 2020 (operator, purpose statistics: exact)",
        "operator",
        "statistics",
        "SELECT EXTRACT(YEAR FROM month) AS year, COUNT(*) AS deposits, SUM(amount_fen) AS total_fen, "
        "AVG(amount_fen) AS avg_fen FROM deposits WHERE month >= DATE '2020-01-01' GROUP BY year ORDER BY year",
    ),
    Example(
        "Accounts and balances by status (analyst, purpose statistics: differentially private)",
        "analyst",
        "statistics",
        "SELECT status, COUNT(*) AS accounts, SUM(balance_fen) AS balance_fen, "
        "AVG(monthly_deposit_fen) AS avg_monthly_fen FROM accounts GROUP BY status ORDER BY accounts DESC, status",
    ),
    Example(
        "Active accounts and balances per city (caseworker: differentially private; one person's figures come "
        "from a consented lookup)",
        "caseworker",
        "",
        "SELECT city_code, COUNT(*) AS accounts, SUM(balance_fen) AS balance_fen FROM accounts "
        "WHERE status = 'active' GROUP BY city_code ORDER BY city_code",
    ),
    Example(
        "Withdrawal reasons with more than 10 withdrawals, HAVING (operator, purpose operations: exact)",
        "operator",
        "operations",
        "SELECT reason, COUNT(*) AS n, SUM(amount_fen) / COUNT(*) AS mean_fen FROM withdrawals "
        "GROUP BY reason HAVING COUNT(*) > 10 ORDER BY n DESC, reason",
    ),
    Example(
        "Open housing loans federation-wide (a bank, loan-review: differentially private)",
        "bank",
        "loan-review",
        "SELECT COUNT(*) AS open_loans, SUM(outstanding_fen) AS outstanding_fen FROM loans "
        "WHERE status IN ('active', 'overdue')",  # no consent: an aggregate concerns no one person
    ),
)
# a DP answer is checked against the clamped oracle: every shown COUNT and SUM within this many stated sd
DP_TOLERANCE_SD = 6
REFUSED: tuple[Example, ...] = (
    Example(
        "Not additive across regions: refused by the planner", "caseworker", "", "SELECT MAX(balance_fen) FROM accounts"
    ),
    Example(
        "A form that names a column without naming it (here the identifier): not in the SQL the federation accepts",
        "caseworker",
        "",
        "SELECT SUM(balance_fen) AS balance_fen FROM accounts WHERE COLUMNS('person_id') <> '310000197302280015'",
    ),
    Example(
        "A cast that could fail on some rows only: refused before any region runs it",
        "caseworker",
        "",
        "SELECT COUNT(*) AS accounts FROM accounts WHERE CAST(status AS INTEGER) > 0",
    ),
    Example(
        "Loans without a purpose: refused by every region's policy",
        "caseworker",
        "",
        "SELECT status, COUNT(*) AS loans FROM loans GROUP BY status",
    ),
)
EXPLAINED = Example(
    "The same question, explained: which rule refuses it and how to ask instead",
    "analyst",
    "",
    "SELECT status, COUNT(*) AS loans FROM loans GROUP BY status",
)


def _command(layout: DemoLayout, example: Example, *flags: str) -> str:
    purpose = f" --purpose {example.purpose}" if example.purpose else ""
    purpose += f" --consent {example.consent}" if example.consent else ""
    extra = "".join(f" {f}" for f in flags)
    return f'$ hpf query --profile {layout.profile_of(example.person)}{purpose}{extra} "{example.sql}"'


def _budget_left(reply: ExplainAnswer) -> tuple[float, float, str]:
    """The least epsilon and delta of the asker's budget left at any region that would answer under DP, and
    when it renews there."""
    dp = [v.privacy for v in reply.verdicts if v.accepted and v.privacy.mode == "dp"]
    if not dp:
        return math.inf, math.inf, ""
    least = min(dp, key=lambda p: p.budget_epsilon - p.budget_spent)
    return least.budget_epsilon - least.budget_spent, min(p.budget_epsilon for p in dp), least.budget_renews


def _dp_check(
    answer: QueryAnswer, plan: Plan, catalog: Catalog, oracle: dict[int, list[int]], text_table: TextTable
) -> tuple[bool, str, str]:
    """Whether every shown COUNT and SUM lies within DP_TOLERANCE_SD stated sd of the clamped oracle (and the
    stated noise is the noise the plan and catalog imply); the verdict and a table of the cells compared."""
    cells, honest = noisy_cells(answer, plan, catalog, oracle)
    epsilon = f"epsilon {answer.privacy['epsilon']:g} spent"
    if not honest:
        return False, f"the noise it states is NOT the noise the catalog implies; {epsilon}", ""
    if not cells:  # every group's noisy count fell under the threshold: nothing shown, nothing to compare
        return True, f"no count or sum shown to compare: every group suppressed; {epsilon}", ""
    worst = max(c.off_sd for c in cells)
    ok = worst <= DP_TOLERANCE_SD
    where = "within" if ok else f"MORE THAN {DP_TOLERANCE_SD} sd FROM, at"
    verdict = f"{where} {worst:.1f} sd of DuckDB over the pooled files (clamped), {epsilon}"
    table = text_table(
        ("group", "column", "answer", "DuckDB, clamped", "noise sd", "off by"),
        (
            (
                ", ".join("NULL" if g is None else str(g) for g in c.group) or "(all)",
                c.column,
                f"{c.answer:,}",
                f"{c.oracle:,}",
                f"{c.sd:,.1f}",
                f"{c.off_sd:.2f} sd",
            )
            for c in cells
        ),
        right_aligned=(2, 3, 4, 5),
    )
    return ok, verdict, table


@dataclass
class _Run:
    """What the examples share: the demo's layout, catalog and policy, one client per person, the renderers."""

    layout: DemoLayout
    catalog: Catalog
    policy: Policy
    renderers: Renderers
    clients: dict[str, FederationClient] = field(default_factory=dict)

    def client(self, person: str) -> FederationClient:
        if person not in self.clients:
            self.clients[person] = FederationClient(load_profile(self.layout.profile_of(person)))
        return self.clients[person]


def run_examples(layout: DemoLayout, renderers: Renderers, audit: bool = True) -> bool:
    """Run the example queries; True when every exact answer equals the pooled-data oracle, every DP answer is
    within DP_TOLERANCE_SD of the clamped one (or refused for a spent budget, as explained before), and every
    refusal is one."""
    run = _Run(layout, load_catalog(layout.catalog), load_policy(layout.policy), renderers)
    all_equal = True
    try:
        explained_dp = False
        for example in EXAMPLES:
            ok, explained_dp = _ask(run, example, explained_dp)
            all_equal &= ok
        all_equal &= _refusals(run)
    finally:
        for c in run.clients.values():
            c.close()
    return (not audit or _audit(layout, run.catalog)) and all_equal


def _ask(run: _Run, example: Example, explained_dp: bool) -> tuple[bool, bool]:
    """Ask one example (explaining first what the first DP question would cost) and check its answer; whether it
    checks out, and whether a DP question has been explained now."""
    ok = True
    asker = run.client(example.person)
    plan = asker.plan(example.sql)
    role = asker.signer.identity.role or ""
    who = Asker(example.person, role, None)
    decision = check_query(run.policy, run.catalog, plan, who, example.purpose, bool(example.consent), party="demo")
    privacy = decision.privacy
    spent = False
    if privacy.mode == "dp":
        assert privacy.epsilon is not None
        _, reply = asker.explain(example.sql, purpose=example.purpose, consent=example.consent or None)
        left, budget, renews = _budget_left(reply)
        spent = left < privacy.epsilon - 1e-9
        if not explained_dp:
            explained_dp = True
            typer.echo(
                f"\n## What the {role}'s next question would cost, explained: it runs nothing and spends "
                f"nothing\n{_command(run.layout, example, '--explain')}"
            )
            typer.echo(run.renderers.explain(plan, reply))
            ok &= len(reply.verdicts) == len(run.layout.node_ids) and all(
                v.accepted and v.privacy.mode == "dp" for v in reply.verdicts
            )
    typer.echo(f"\n## {example.title}\n{_command(run.layout, example)}")
    started = time.perf_counter()
    try:
        answer = asker.query(example.sql, purpose=example.purpose, consent=example.consent or None)
    except FederationError as err:
        if not spent or err.code != "POLICY_PRIVACY_BUDGET":
            raise
        typer.echo(f"error: {err}")
        typer.echo(
            f"(refused, as the explain said: {left:g} of the {role}'s epsilon {budget:g} is left this "
            f"{privacy.budget.period if privacy.budget else 'period'}; it renews {renews}. "
            "A fresh --data directory starts a new ledger)"
        )
        return ok, explained_dp
    elapsed = (time.perf_counter() - started) * 1e3
    typer.echo(run.renderers.answer(answer))
    if spent:  # the explain said the budget could not pay for it, and it was answered
        ok = False
        typer.echo("(answered though the explain said the budget was spent)")
    if privacy.mode == "dp":
        return ok & _check_dp(run, answer, plan, privacy.epsilon, elapsed), explained_dp
    return ok & _check_exact(run, example, answer, plan, decision.min_group_size, elapsed), explained_dp


def _check_dp(run: _Run, answer: QueryAnswer, plan: Plan, epsilon: float | None, elapsed: float) -> bool:
    """A DP answer: its shown cells against the clamped oracle, at the epsilon the policy set, from every region."""
    oracle = clamped_totals(run.catalog, run.layout.files, run.layout.node_ids, plan)
    ok, verdict, table = _dp_check(answer, plan, run.catalog, oracle, run.renderers.table)
    ok &= answer.privacy.get("mode") == "dp" and answer.privacy.get("epsilon") == epsilon
    ok &= not answer.missing
    if table:
        typer.echo(table)
    typer.echo(f"({elapsed:.0f} ms; {verdict})")
    return ok


def _check_exact(run: _Run, example: Example, answer: QueryAnswer, plan: Plan, k: int, elapsed: float) -> bool:
    """An exact answer: equal to DuckDB over the pooled files, for the groups no region withheld under ``k``."""
    withheld = withheld_groups(run.catalog, run.layout.files, run.layout.node_ids, plan, k)
    equal = matches(answer, pooled(run.catalog, run.layout.files, "*", example.sql), plan, withheld)
    equal &= answer.privacy.get("mode") == "exact"
    verdict = "equals" if equal else "DIFFERS FROM"
    scope = f", for the groups not withheld under k = {k}" if answer.withheld_groups else ""
    typer.echo(f"({elapsed:.0f} ms; {verdict} DuckDB over the pooled files{scope})")
    return equal


def _refusals(run: _Run) -> bool:
    """The questions every region refuses, then one explained: True when each is refused."""
    ok = True
    for example in REFUSED:
        typer.echo(f"\n## {example.title}\n{_command(run.layout, example)}")
        try:
            run.client(example.person).query(example.sql, purpose=example.purpose)
            typer.echo("unexpectedly answered")
            ok = False
        except FederationError as err:
            typer.echo(f"error: {err}")
    typer.echo(f"\n## {EXPLAINED.title}\n{_command(run.layout, EXPLAINED, '--explain')}")
    plan, reply = run.client(EXPLAINED.person).explain(EXPLAINED.sql, purpose=EXPLAINED.purpose)
    typer.echo(run.renderers.explain(plan, reply))
    return ok and not any(v.accepted for v in reply.verdicts)


def _audit(layout: DemoLayout, catalog: Catalog) -> bool:
    """Every region's audit log, verified with the catalog's audit key: True when each is whole and pinned."""
    ok = True
    entries = 0
    for node in catalog.nodes:
        key = load_public_key(node.audit_key) if node.audit_key else None
        report = verify_log(layout.state(node.id) / "audit", key, node_id=node.id)
        ok &= report.ok and report.key_pinned
        entries += report.entries
    audit_dir = layout.state(layout.node_ids[0]) / "audit"
    typer.echo(
        f"\n## Audit\nevery region logged each question, allowed or refused: {len(catalog.nodes)} logs, "
        f"{entries} entries, "
        + ("every root and checkpoint signature verified" if ok else "NOT every log verified")
        + " with the catalog's audit keys\n"
        f"$ hpf audit verify {audit_dir} --catalog {layout.catalog} --node {layout.node_ids[0]}"
    )
    return ok
