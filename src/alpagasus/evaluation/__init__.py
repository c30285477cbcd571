"""After training: answers on the test sets (rules/generate.smk), pairwise judging in both orders
(rules/judge.smk), and the statistics and win-rate tables (rules/report.smk)."""
