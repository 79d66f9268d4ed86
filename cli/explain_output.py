"""Printing `hpf query --explain`: the partial plan every region would run, and each region's signed verdict."""

from __future__ import annotations

import json
from typing import Any

from hpf.cli.output import text_table
from hpf.client.answers import ExplainAnswer
from hpf.federation.errors import is_code, printable
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.plan import WITHHELD, Component, Plan


def _partial(component: Component) -> str:
    if component.kind == WITHHELD:
        return "withheld mark (how many regions held the group below their minimum size k)"
    return f"{component.kind}({component.arg or '*'})"


def _plan_lines(plan: Plan) -> list[str]:
    layout = plan.layout
    lines = [f"table:      {plan.table}", f"filter:     {plan.where or '(none)'}"]
    for key in plan.keys:
        lines.append(f"group key:  {key.expr} ({len(key.values)} declared values + NULL + other)")
    for component in plan.components:
        lines.append(f"partial:    {_partial(component)}")
    lines.append(f"slots:      {layout.total} in {len(layout.chunk_sizes)} ciphertext(s), {layout.cells} group cell(s)")
    lines.append(f"plan:       {plan.fingerprint[:16]}")
    return lines


def _privacy_json(p: pb.PrivacyVerdict) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": p.mode, "rule": printable(p.rule)}
    if p.mode == "dp":
        out.update(
            epsilon=p.epsilon,
            delta=p.delta,
            threshold=p.threshold,
            noise_sd=list(p.noise_sd),
            budget={
                "epsilon": p.budget_epsilon,
                "spent": p.budget_spent,
                "period": p.budget_period,
                "renews": p.budget_renews,
            },
        )
    return out


def _privacy_cell(p: pb.PrivacyVerdict, plan: Plan) -> str:
    """How the region would answer: exact (k applies), or DP with its cost, budget and threshold."""
    if p.mode != "dp":
        return "exact"
    noise = ", ".join(
        f"{_partial(c)} ±{sd / 10**c.scale:,.1f}" for c, sd in zip(plan.components, p.noise_sd, strict=False) if sd
    )
    left = max(p.budget_epsilon - p.budget_spent, 0.0)
    return (
        f"DP: epsilon {p.epsilon:g} per answer, {left:g} of {p.budget_epsilon:g} left this {p.budget_period} "
        f"(renews {p.budget_renews}); groups under {p.threshold} suppressed; noise sd {noise}"
    )


UNVERIFIED = (
    "unverified: this profile pins no catalog, so no region's signature on its verdict was checked "
    "(the verdicts are the coordinator's word)"
)


def _verdict_json(v: pb.NodeVerdict) -> dict[str, Any]:
    # signed: the region's own verdict; unsigned: the coordinator's report that it got none from the region
    out: dict[str, Any] = {"node_id": v.node_id, "accepted": v.accepted, "signed": bool(v.signature)}
    if v.accepted:
        out["min_group_size"] = v.min_group_size
        out["min_participants"] = v.min_participants
        out["privacy"] = _privacy_json(v.privacy)
    else:
        out.update(code=_code(v.code), message=printable(v.message), rule=printable(v.rule), hint=printable(v.hint))
    return out


def _code(code: str) -> str:
    """A verdict's code as shown: a stable code, or a mark that the region sent something else."""
    return code if is_code(code) else "?"


def _row(v: pb.NodeVerdict) -> tuple[str, ...]:
    # a region's own words may still hold anything a rogue region puts there: shown without control characters
    if v.accepted:
        k = "-" if v.privacy.mode == "dp" else str(v.min_group_size)
        return (v.node_id, "accepts", k, "", printable(v.privacy.rule), "")
    if not v.signature:  # the coordinator's word that the region gave no verdict
        return (v.node_id, "no verdict", "", _code(v.code), "", printable(f"{v.message} ({v.hint})"))
    return (v.node_id, "refuses", "", _code(v.code), printable(v.rule), printable(v.hint or v.message))


def render_explain(plan: Plan, reply: ExplainAnswer, fmt: str) -> str:
    """The plan and the verdicts as a table (default) or JSON; an explain whose signatures were not checked says
    so (``verified`` in JSON, one line under the table)."""
    if fmt == "json":
        doc = {
            "plan": {
                "fingerprint": plan.fingerprint,
                "table": plan.table,
                "where": plan.where,
                "keys": [k.expr for k in plan.keys],
                "partials": [_partial(c) for c in plan.components],
                "slots": plan.layout.total,
                "ciphertexts": len(plan.layout.chunk_sizes),
            },
            "regions": [_verdict_json(v) for v in reply.verdicts],
            "verified": reply.verified,
        }
        return json.dumps(doc, ensure_ascii=False)
    rows = [_row(v) for v in reply.verdicts]
    accepted = [v for v in reply.verdicts if v.accepted]
    after = [f"{len(accepted)} of {len(reply.verdicts)} region(s) would answer"]
    answers = {_privacy_cell(v.privacy, plan) for v in accepted}
    if len(answers) == 1:
        after.append(f"answer: {answers.pop()}")
    elif answers:
        after.append("answer: the regions' privacy terms differ (DP_TERMS_DIFFER): " + " | ".join(sorted(answers)))
    if accepted:
        least = max(v.min_participants for v in accepted)
        after.append(f"masks: every region's answer is masked; summed over at least {least} regions")
    if not reply.verified:
        after.append(UNVERIFIED)
    return text_table(
        ("region", "verdict", "k", "code", "rule", "how to ask instead"),
        rows,
        before=_plan_lines(plan),
        after=after,
    )
