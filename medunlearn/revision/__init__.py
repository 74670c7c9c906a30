"""Revisions of a deployed model: candidates and selection, the forget ledger, records,
cards, reproduction, audit and the registry."""
