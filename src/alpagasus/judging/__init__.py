"""Asking a judge, never paying twice: the engine and its cache, claims, cost ledger and rate limiter,
the paper's judge prompts, reply parsing, expected scores, the rating stage (rules/rate.smk) and
the judge backends (judges/)."""
