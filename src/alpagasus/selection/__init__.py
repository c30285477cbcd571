"""Choosing the training data from the judge's scores (rules/select.smk) and how far judges agree
(rules/agreement.smk)."""
