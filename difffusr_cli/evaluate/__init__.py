"""Evaluation: the Gram–Schmidt and bilinear fusion baselines and the fusion quality metrics.

Submodules are imported explicitly (``from difffusr_cli.evaluate.gram_schmidt import ...``) so
that the pipeline, which needs only the baselines, does not pay for importing torchmetrics.
"""
