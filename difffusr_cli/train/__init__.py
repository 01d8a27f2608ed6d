"""Training: data degradations (``degrade``) and the training loops of both stages.

Submodules are imported explicitly (``from difffusr_cli.train.degrade import ...``).
"""
