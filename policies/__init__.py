"""Node-side policies: who may ask what, where each column may appear, group-size and rate limits.

Today every node enforces the catalog's rules (identifier columns only in a WHERE equality, additive
aggregates only, declared group-by domains) through the shared planner; per-role policy files live here
when signed queries and identities arrive.
"""
