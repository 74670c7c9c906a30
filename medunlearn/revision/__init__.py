"""Revisions of a deployed model.

Candidates and selection, the forget ledger, records, cards, reproduction, audit and the
registry.
"""
