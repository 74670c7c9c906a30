"""Evidence that a revision forgot what it should and kept the rest.

Metrics, membership inference, per-example audit statistics and the gates.
"""
