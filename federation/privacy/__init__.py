"""Differential privacy: the DP plan and its terms, with the suppression of small noisy groups
(:mod:`.dp_plan`), the Skellam mechanism (:mod:`.skellam`) and the fixed decimal units of epsilon and delta
(:mod:`.fixed_decimal`)."""
