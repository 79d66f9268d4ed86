"""Node-side policies: who may ask what, where each column may appear, group-size and rate limits.

A regional centre decides itself who may ask what. Every node loads one policy file (``policies/default.yaml``
unless its config names another, often one that ``extends`` a packaged policy: ``hpf:base``, the table-agnostic
base any catalog's policy can start from, or ``hpf:default``, the demo federation's) and checks every request
against it, after the shared planner's own rules (identifier columns only in a WHERE equality,
additive aggregates only, declared group-by domains).

- :mod:`policies.model`: the file format and its validation; :mod:`policies.fields` its values (uses, names,
  codes), :mod:`policies.asker_rules` its ``askers`` rules (who may ask from where);
- :mod:`policies.loader`: reading a file, ``extends``, errors that name the file and line;
  :mod:`policies.cross_checks` what a policy says across its fields, and against the catalog;
- :mod:`policies.uses`: how a plan uses each column (filter, group, output, aggregate), judged fail-closed;
- :mod:`policies.engine`: checking a question or a lookup for an asker, by the stages of
  :mod:`policies.query_stages` and :mod:`policies.lookup_stages` (:mod:`policies.refusals`: what a refusal says);
- :mod:`policies.rate_limit`: per-identity rate limits.
"""

from pathlib import Path

DEFAULT_POLICY = Path(__file__).with_name("default.yaml")
BASE_POLICY = Path(__file__).with_name("base.yaml")

PACKAGED_PREFIX = "hpf:"
# the packaged policies a file may extend from any folder (``extends: hpf:base``), by name
PACKAGED_POLICIES: dict[str, Path] = {"base": BASE_POLICY, "default": DEFAULT_POLICY}
