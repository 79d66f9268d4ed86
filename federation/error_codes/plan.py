"""Codes of the question as asked: its SQL, its plan, its privacy terms and the identifiers it looks up."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import PlanError

_plan = Area("Questions and plans", PlanError, Scope.QUESTION, Effect.FAILS_QUESTION)
_request = Area("Questions and plans", PlanError, Scope.REQUEST, Effect.REGION_MISSING)

CODES: tuple[Code, ...] = (
    _plan.code("PLAN_INVALID", "the SQL cannot be answered by the federation as written"),
    _plan.code("PLAN_SYNTAX", "the SQL is empty or cannot be parsed"),
    _plan.code("PLAN_TOO_LONG", "the SQL is longer than a question may be"),
    _plan.code("PLAN_TOO_NESTED", "the SQL nests too deeply"),
    _plan.code("PLAN_TOO_LARGE", "the question asks for more aggregates or groups than fit one question"),
    _plan.code("PLAN_TOO_EXPENSIVE", "binding the query would take the planner more time or memory than it allows"),
    _plan.code("PLAN_MULTIPLE_STATEMENTS", "more than one SQL statement was sent"),
    _plan.code("PLAN_NOT_SELECT", "only SELECT queries can be federated"),
    _plan.code("PLAN_NO_TABLE", "the query names no catalog table in its FROM clause"),
    _plan.code("PLAN_UNKNOWN_TABLE", "the query names a table the catalog does not hold"),
    _plan.code("PLAN_UNKNOWN_COLUMN", "the query names a column its table does not hold"),
    _plan.code("PLAN_JOIN", "joins are not supported: each region's rows stay in that region"),
    _plan.code("PLAN_SUBQUERY", "subqueries are not supported"),
    _plan.code("PLAN_CTE", "WITH (common table expressions) is not supported"),
    _plan.code("PLAN_SET_OPERATION", "UNION, INTERSECT and EXCEPT are not supported"),
    _plan.code("PLAN_WINDOW", "window functions are not supported"),
    _plan.code("PLAN_PARAMETER", "query parameters are not supported; write the values in"),
    _plan.code("PLAN_UNSUPPORTED_CLAUSE", "the query uses a clause the federation does not support"),
    _plan.code("PLAN_ROW_LEVEL", "the query would return rows; the federation returns only aggregates"),
    _plan.code("PLAN_NOT_ADDITIVE", "an aggregate is not additive across regions"),
    _plan.code("PLAN_UNSUPPORTED_AGGREGATE", "the aggregate is not one the federation computes"),
    _plan.code("PLAN_NESTED_AGGREGATE", "aggregates cannot be nested"),
    _plan.code("PLAN_AGGREGATE_IN_WHERE", "aggregates are not allowed in WHERE"),
    _plan.code("PLAN_INEXACT_ARGUMENT", "an aggregate's argument must be an exact number"),
    _plan.code("PLAN_GROUP_BY", "the GROUP BY form is not supported"),
    _plan.code("PLAN_GROUP_NO_DOMAIN", "a grouping column has no declared finite domain"),
    _plan.code("PLAN_NOT_GROUPED", "a column must appear in GROUP BY or inside an aggregate"),
    _plan.code("PLAN_IDENTIFIER_MISUSE", "an identifier column is used other than in a WHERE equality with a literal"),
    _plan.code("PLAN_EXPRESSION_NOT_ALLOWED", "the query holds an expression outside the federation's SQL"),
    _plan.code("PLAN_MAY_OVERFLOW", "an expression could overflow on some values of its columns"),
    _plan.code("PLAN_CAST_NOT_TOTAL", "a cast could fail on some values of its column"),
    _plan.code("PLAN_TYPE_MIX", "an expression mixes types that would be converted row by row"),
    _plan.code(
        "PLAN_BACKEND_UNSUPPORTED",
        "the question holds a construct a region's database engine cannot run exactly (the message names it)",
    ),
    _plan.code("PLAN_BIND", "an expression binds to another type than the plan derived"),
    _plan.code("PLAN_MISMATCH", "the parties derived different plans for the question"),
    _plan.code("PLAN_QUERY_ID_MISMATCH", "the query id does not belong to the signed question"),
    _plan.code("PLAN_UNKNOWN_REGION", "the request names a region not in this federation"),
    _plan.code(
        "DP_UNBOUNDED",
        "a differentially private answer needs contribution and column bounds the catalog does not declare",
    ),
    _plan.code(
        "DP_UNSUPPORTED", "the region keeps no privacy budget ledger, so gives no differentially private answer"
    ),
    _plan.code("DP_TERMS_DIFFER", "the regions' noise is not what the plan and the catalog derive"),
    _plan.code(
        "FINISH_FAILED",
        "the client cannot finish the result from the decrypted sums",
        scope=Scope.LOCAL,
        effect=Effect.REGION_MISSING,
    ),
    _request.code("INPUT_NOT_TEXT", "a text field of the request is not valid UTF-8 text"),
    _request.code("RPC_MALFORMED", "the request cannot be read as a message of its method's type"),
    _request.code(
        "PERSON_ID_INVALID", "an identifier to look up is not a valid person id", effect=Effect.FAILS_QUESTION
    ),
    _request.code("PERSON_ID_DUPLICATE", "a person is listed twice in one lookup", effect=Effect.FAILS_QUESTION),
)
