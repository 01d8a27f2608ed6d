"""Evaluation commands (``eval fusion``, ``eval opensr``): scoring, reports and quicklooks.

Degradations, fusion baselines and metrics are shared with training and live outside this
package (:mod:`difffusr_cli.degrade`, :mod:`difffusr_cli.fusion_baselines`,
:mod:`difffusr_cli.metrics`); nothing here imports :mod:`difffusr_cli.train`. Submodules are
imported explicitly so that the pipeline does not pay for importing torchmetrics.
"""
