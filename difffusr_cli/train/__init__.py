"""Training of both stages.

Configuration (``config``), the shared loop (``loop``), the run folder and its checkpoint
(``run_dir``), and the stages (``rgb``, ``fusion``).

Degradations come from :mod:`difffusr_cli.degrade`, metrics from :mod:`difffusr_cli.metrics`;
nothing here imports :mod:`difffusr_cli.evaluate`. Submodules are imported explicitly.
"""
