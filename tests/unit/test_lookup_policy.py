"""Which roles may look people up, for what, how many at once: the ``lookups`` policy section and check_lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hpf.client.lookups import LOOKUP_BATCH
from hpf.federation.consent.tokens import FACTS
from hpf.federation.crypto.lookup_codec import default_facts
from hpf.federation.errors import ConfigError, PolicyViolation
from hpf.policies import DEFAULT_POLICY
from hpf.policies.engine import Asker, check_lookup
from hpf.policies.loader import load_policy
from hpf.policies.model import LookupPolicy, Policy
from hpf.policies.rate_limit import RateLimiter

PARTY = "hangzhou"


@pytest.fixture(scope="module")
def default() -> Policy:
    return load_policy(DEFAULT_POLICY)


def asker(role: str, region: str | None = "hangzhou") -> Asker:
    return Asker(name=f"{role}-1", role=role, region=region)


def lookup(policy: Policy, role: str, **kw: Any) -> Any:
    args: dict[str, Any] = {"purpose": "loan-review", "consent": True, "subjects": 1, "breakdown": False}
    args.update(kw)
    args.setdefault("facts", default_facts(role, args["purpose"]))  # what the client asks for by default
    return check_lookup(policy, asker(role), party=PARTY, **args)


def refusal(policy: Policy, role: str, **kw: Any) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as info:
        lookup(policy, role, **kw)
    return info.value


# -------------------------------------------------------------------------- the model


def test_a_lookup_policy_needs_a_purpose() -> None:
    with pytest.raises(ValidationError, match="at least one purpose"):
        LookupPolicy.model_validate({"purposes": []})
    with pytest.raises(ValidationError):
        LookupPolicy.model_validate({})


def test_breakdown_purposes_must_be_lookup_purposes() -> None:
    with pytest.raises(ValidationError, match="breakdown purpose 'account-transfer'"):
        LookupPolicy.model_validate({"purposes": ["loan-review"], "breakdown": ["account-transfer"]})
    ok = LookupPolicy.model_validate(
        {"purposes": ["loan-review", "account-transfer"], "breakdown": ["account-transfer"]}
    )
    assert ok.breakdown == ["account-transfer"]


@pytest.mark.parametrize("bad", [0, -1, 1_000_001])
def test_max_subjects_is_bounded(bad: int) -> None:
    with pytest.raises(ValidationError, match="max_subjects must be 1 to 1000000"):
        LookupPolicy.model_validate({"purposes": ["loan-review"], "max_subjects": bad})


def test_lookup_defaults_are_the_strict_ones() -> None:
    lp = LookupPolicy.model_validate({"purposes": ["loan-review"]})
    assert (lp.consent, lp.max_subjects, lp.breakdown, lp.rate_limit) == ("required", 1, [], None)
    assert LookupPolicy.model_validate({"purposes": ["x"], "max_subjects": 1_000_000}).max_subjects == 1_000_000
    for extra in ({"subjects": 3}, {"consent": "maybe"}, {"purposes": ["Loan Review"]}):
        with pytest.raises(ValidationError):
            LookupPolicy.model_validate({"purposes": ["loan-review"], **extra})


def test_default_policy_lookups(default: Policy) -> None:
    caseworker, integrator = default.roles["caseworker"].lookups, default.roles["integrator"].lookups
    assert caseworker is not None and integrator is not None
    assert caseworker.purposes == ["loan-review", "account-transfer"] and caseworker.breakdown == ["account-transfer"]
    assert (caseworker.consent, caseworker.max_subjects) == ("required", 1)
    assert (integrator.purposes, integrator.breakdown, integrator.max_subjects) == (["loan-review"], [], 5000)
    assert caseworker.rate_limit is not None and integrator.rate_limit is not None
    assert [n for n, r in default.roles.items() if r.lookups is not None] == ["caseworker", "integrator"]
    assert any("person lookups" in line and "up to 1 per request" in line for line in default.summary())
    # an operator sees what each role may receive: a bank the loan facts alone
    assert any("facts duplicate_loans, loan_cities;" in line for line in default.summary())
    assert default.plain()["roles"]["caseworker"]["lookups"]["rate_limit"] == {"requests": 600, "per_seconds": 3600}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def test_a_policy_extending_the_default_tightens_lookups_key_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  caseworker:\n    lookups:\n"
        "      rate_limit: {requests: 5, per_seconds: 60}\n  integrator:\n    lookups: ~\n",
    )
    policy = load_policy(path)
    caseworker = policy.roles["caseworker"].lookups
    assert caseworker is not None and caseworker.rate_limit is not None
    assert (caseworker.rate_limit.requests, caseworker.purposes) == (5, ["loan-review", "account-transfer"])
    assert policy.roles["integrator"].lookups is None
    assert lookup(policy, "caseworker").role == "caseworker"
    assert refusal(policy, "integrator").code == "POLICY_LOOKUP_DENIED"


def test_a_lookup_purpose_must_be_declared_and_errors_name_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  integrator:\n    lookups:\n"
        "      purposes: [loan-review, fishing]\n",
    )
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.code == "POLICY_FILE_INVALID"
    assert f"{path}:6" in info.value.message and "'fishing' is not declared" in info.value.message
    path = write(
        tmp_path,
        f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  integrator:\n    lookups:\n      max_subjects: 0\n",
    )
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert f"{path}:6" in info.value.message and "max_subjects" in info.value.message


# -------------------------------------------------------------------------- check_lookup


def test_allowed_lookups(default: Policy) -> None:
    decision = lookup(default, "caseworker")
    assert decision.role == "caseworker" and decision.rules[0].endswith("roles.caseworker.lookups.purposes")
    assert lookup(default, "caseworker", purpose="account-transfer", breakdown=True).role == "caseworker"
    assert lookup(default, "integrator", subjects=5_000).role == "integrator"


REFUSALS = [
    ("auditor", {}, "POLICY_ROLE_DENIED", "roles"),
    ("", {}, "POLICY_ROLE_DENIED", "roles"),
    ("analyst", {}, "POLICY_LOOKUP_DENIED", "roles.analyst.lookups"),
    ("operator", {}, "POLICY_LOOKUP_DENIED", "roles.operator.lookups"),
    ("caseworker", {"purpose": ""}, "POLICY_PURPOSE_REQUIRED", "roles.caseworker.lookups.purposes"),
    ("caseworker", {"purpose": "fishing"}, "POLICY_PURPOSE_UNKNOWN", "purposes"),
    ("caseworker", {"purpose": "statistics"}, "POLICY_PURPOSE_NOT_ALLOWED", "roles.caseworker.lookups.purposes"),
    ("integrator", {"purpose": "account-transfer"}, "POLICY_PURPOSE_NOT_ALLOWED", "roles.integrator.lookups.purposes"),
    ("caseworker", {"consent": False}, "POLICY_CONSENT_REQUIRED", "roles.caseworker.lookups.consent"),
    ("caseworker", {"subjects": 2}, "POLICY_LOOKUP_TOO_MANY", "roles.caseworker.lookups.max_subjects"),
    ("integrator", {"subjects": 5_001}, "POLICY_LOOKUP_TOO_MANY", "roles.integrator.lookups.max_subjects"),
    ("caseworker", {"breakdown": True}, "POLICY_BREAKDOWN_DENIED", "roles.caseworker.lookups.breakdown"),
    ("integrator", {"breakdown": True}, "POLICY_BREAKDOWN_DENIED", "roles.integrator.lookups.breakdown"),
]


@pytest.mark.parametrize(("role", "kw", "code", "rule"), REFUSALS, ids=[f"{r[0]}-{r[2]}" for r in REFUSALS])
def test_refusals_carry_their_code_and_rule(
    default: Policy, role: str, kw: dict[str, Any], code: str, rule: str
) -> None:
    err = refusal(default, role, **kw)
    assert err.code == code
    assert err.rule == f"{PARTY}: {rule}"
    assert err.hint


def test_refusal_hints_say_what_would_be_allowed(default: Policy) -> None:
    assert refusal(default, "analyst").hint == "roles that may look people up here: caseworker, integrator"
    assert "loan-review | account-transfer" in (refusal(default, "caseworker", purpose="statistics").hint or "")
    assert refusal(default, "caseworker", subjects=2).hint == "send at most 1 per request"
    assert "account-transfer" in (refusal(default, "caseworker", breakdown=True).hint or "")
    assert "none" in (refusal(default, "integrator", breakdown=True).hint or "")


def test_the_checks_come_in_order(default: Policy) -> None:
    """A request wrong in every way is refused for the first thing wrong: the role before the purpose, the
    purpose before consent, consent before the count, the count before the breakdown."""
    everything = {"purpose": "statistics", "consent": False, "subjects": 2, "breakdown": True}
    assert refusal(default, "analyst", **everything).code == "POLICY_LOOKUP_DENIED"
    assert refusal(default, "caseworker", **everything).code == "POLICY_PURPOSE_NOT_ALLOWED"
    everything["purpose"] = "loan-review"
    assert refusal(default, "caseworker", **everything).code == "POLICY_CONSENT_REQUIRED"
    everything["consent"] = True
    assert refusal(default, "caseworker", **everything).code == "POLICY_LOOKUP_TOO_MANY"
    everything["subjects"] = 1
    assert refusal(default, "caseworker", **everything).code == "POLICY_BREAKDOWN_DENIED"


def test_optional_consent_allows_a_lookup_without_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  caseworker:\n    lookups:\n      consent: optional\n",
    )
    policy = load_policy(path)
    assert lookup(policy, "caseworker", consent=False).role == "caseworker"
    assert refusal(load_policy(DEFAULT_POLICY), "caseworker", consent=False).code == "POLICY_CONSENT_REQUIRED"


@pytest.mark.parametrize("consent", ["optional", "required"])
def test_integrators_never_look_people_up_under_free_text_consent(tmp_path: Path, consent: str) -> None:
    """A free-text reference suits a caseworker at a counter; a bank's lookups take each person's token."""
    path = write(
        tmp_path,
        f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  integrator:\n    lookups:\n"
        f"      consent: {consent}\n      consent_issuers: ~\n",
    )
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert err.value.code == "POLICY_FILE_INVALID"
    assert f"{path}:6: roles.integrator.lookups.consent: integrators look people up only under" in err.value.message
    tables = write(
        tmp_path,
        f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  integrator:\n    lookups: ~\n    tables:\n"
        "      loans: {consent: required}\n",
    )
    with pytest.raises(ConfigError) as err:
        load_policy(tables)
    assert f"{tables}:7: roles.integrator.tables.loans.consent: integrators' aggregate" in err.value.message
    assert "caseworkers at a counter" in (err.value.hint or "")


def test_integrators_lookups_list_their_facts(tmp_path: Path) -> None:
    """The facts a bank may receive are an allow-list: a policy that gives integrators lookups without ``facts``
    (left out, every fact: balances too) is refused; one that lists them, or inherits the default's, loads."""
    bare = write(
        tmp_path,
        "version: 1\nextends: hpf:base\nroles:\n  integrator:\n    lookups:\n      purposes: [loan-review]\n"
        "      consent: token\n      consent_issuers: [shanghai-consent]\n",
    )
    with pytest.raises(ConfigError) as err:
        load_policy(bare)
    assert err.value.code == "POLICY_FILE_INVALID"
    assert f"{bare}:5: roles.integrator.lookups: integrators' lookups list the facts" in err.value.message
    listed = write(tmp_path, bare.read_text() + "      facts: [duplicate_loans, loan_cities]\n")
    assert load_policy(listed).roles["integrator"].lookups.facts == ["duplicate_loans", "loan_cities"]  # type: ignore[union-attr]
    inherited = write(
        tmp_path, f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  integrator:\n    lookups:\n      max_subjects: 9\n"
    )
    assert load_policy(inherited).roles["integrator"].lookups.facts == ["duplicate_loans", "loan_cities"]  # type: ignore[union-attr]
    removed = write(  # `facts: ~` in an extending file removes the inherited list: refused, not every fact
        tmp_path, f"version: 1\nextends: {DEFAULT_POLICY}\nroles:\n  integrator:\n    lookups:\n      facts: ~\n"
    )
    with pytest.raises(ConfigError) as err:
        load_policy(removed)
    assert "integrators' lookups list the facts" in err.value.message


EVERYONE = ("shanghai", "hangzhou", "nanjing")


def test_leaving_regions_out_is_a_per_city_answer_unless_the_role_may_leave_its_home_out(default: Policy) -> None:
    but_home = ("shanghai", "nanjing")  # the asker's home is hangzhou
    assert lookup(default, "caseworker", asked=but_home, everyone=EVERYONE).role == "caseworker"
    assert lookup(default, "caseworker", asked=EVERYONE, everyone=EVERYONE).role == "caseworker"
    some = refusal(default, "caseworker", asked=("shanghai",), everyone=EVERYONE)
    assert (some.code, some.rule) == ("POLICY_BREAKDOWN_DENIED", f"{PARTY}: roles.caseworker.lookups.breakdown")
    # the integrator's lookups do not say exclude_home
    bank = refusal(default, "integrator", asked=but_home, everyone=EVERYONE)
    assert (bank.code, bank.rule) == ("POLICY_BREAKDOWN_DENIED", f"{PARTY}: roles.integrator.lookups.exclude_home")
    # with one region left it would be that city's own figures
    two = refusal(default, "caseworker", asked=("shanghai",), everyone=("shanghai", "hangzhou"))
    assert (two.code, two.rule) == ("POLICY_BREAKDOWN_DENIED", f"{PARTY}: roles.caseworker.lookups.exclude_home")
    # a purpose with a per-city answer allows any regions
    assert lookup(default, "caseworker", purpose="account-transfer", asked=("shanghai",), everyone=EVERYONE)


# -------------------------------------------------------------------------- unclassified columns


def test_a_lookup_that_reads_an_unclassified_column_is_refused_whatever_the_role_may(default: Policy) -> None:
    """A lookup reads fixed columns of the federation's own tables; where the catalog leaves one without a class,
    no policy allows it, its ``lookups`` section no more than a query's column entries."""
    err = refusal(default, "caseworker", unclassified=["accounts.balance_fen", "loans.status"])
    assert err.code == "POLICY_COLUMN_UNCLASSIFIED"
    assert err.message == (
        "a person lookup reads column balance_fen of accounts, which has no class in this node's catalog, so no "
        "policy allows it"
    )
    assert err.rule == f"{PARTY}: classes"
    assert err.hint and "tables.accounts.columns.balance_fen" in err.hint
    # a role that may not look anybody up is told that first
    assert refusal(default, "analyst", unclassified=["accounts.balance_fen"]).code == "POLICY_LOOKUP_DENIED"


def test_the_columns_a_lookup_reads_are_named_where_the_catalog_leaves_them_unclassified() -> None:
    from hpf.federation.catalog import Catalog
    from hpf.federation.hpf_schema import demo_catalog
    from hpf.node.lookup_index import unclassified_columns

    doc = demo_catalog({"shanghai": "127.0.0.1:1"})
    assert unclassified_columns(Catalog.model_validate(doc)) == []
    doc["tables"]["loans"]["columns"]["status"].pop("class")
    doc["tables"]["accounts"]["columns"]["status"]["class"] = None
    doc["tables"]["deposits"]["columns"]["city_code"].pop("class")  # a column no lookup reads
    assert unclassified_columns(Catalog.model_validate(doc)) == ["accounts.status", "loans.status"]


def test_default_integrator_limits_fit_a_banks_day_and_refuse_enumerating_a_district(default: Policy) -> None:
    """A bank's screening batch (the client's 4,550 a request) and a day's applications pass; every identifier of
    one district born in one year (365 days x 1,000 sequence numbers) does not, in one request or over a day."""
    integrator = default.roles["integrator"]
    lookups = integrator.lookups
    assert lookups is not None and lookups.rate_limit is not None and integrator.rate_limit is not None
    assert LOOKUP_BATCH <= lookups.max_subjects <= 5_000
    assert (lookups.rate_limit.requests, lookups.rate_limit.per_seconds) == (10_000, 86_400)
    assert (integrator.rate_limit.requests, integrator.rate_limit.per_seconds) == (2_000, 86_400)
    district_year = 365 * 1_000
    assert refusal(default, "integrator", subjects=district_year).code == "POLICY_LOOKUP_TOO_MANY"
    limiter, t = RateLimiter(), 1_000.0
    rule = "roles.integrator.lookups.rate_limit"
    for _ in range(2):  # a day's applications, screened twice
        limiter.take("bank", lookups.rate_limit, party=PARTY, role="integrator", now=t, rule=rule, cost=5_000)
    with pytest.raises(PolicyViolation) as info:  # the next applicant that day is refused
        limiter.take("bank", lookups.rate_limit, party=PARTY, role="integrator", now=t + 3_600, rule=rule, cost=1)
    assert info.value.code == "POLICY_RATE_LIMITED" and info.value.rule == f"{PARTY}: {rule}"
    # the next day the bank screens again
    limiter.take("bank", lookups.rate_limit, party=PARTY, role="integrator", now=t + 86_401, rule=rule, cost=5_000)
    requests = RateLimiter()
    for i in range(integrator.rate_limit.requests):
        requests.take("bank", integrator.rate_limit, party=PARTY, role="integrator", now=t + i)
    with pytest.raises(PolicyViolation):
        requests.take("bank", integrator.rate_limit, party=PARTY, role="integrator", now=t + 80_000)


# -------------------------------------------------------------------------- facts


def test_a_bank_may_receive_only_what_a_loan_review_needs(default: Policy) -> None:
    """The default integrator policy allows duplicate loans and the number of cities with an open loan; a
    request for a balance (alone or with them) is refused with the rule that says so."""
    integrator = default.roles["integrator"].lookups
    assert integrator is not None and integrator.facts == ["duplicate_loans", "loan_cities"]
    lookup(default, "integrator", consent=True, facts=["duplicate_loans", "loan_cities"])
    lookup(default, "integrator", consent=True, facts=["duplicate_loans"])
    for asked in (["balance"], ["duplicate_loans", "balance"], list(FACTS), ["contributions"], ["loans"]):
        err = refusal(default, "integrator", facts=asked)
        assert err.code == "POLICY_FACTS_NOT_ALLOWED" and err.rule == f"{PARTY}: roles.integrator.lookups.facts"
        assert "duplicate_loans, loan_cities" in (err.hint or "")
    lookup(default, "caseworker", facts=list(FACTS))  # a caseworker at a counter may see the whole picture


def test_a_policy_names_only_known_facts() -> None:
    assert LookupPolicy.model_validate({"purposes": ["x"]}).facts == list(FACTS)  # omitted: every fact
    for bad in (["balances"], [], ["balance", "balance"]):
        with pytest.raises(ValidationError):
            LookupPolicy.model_validate({"purposes": ["x"], "facts": bad})
