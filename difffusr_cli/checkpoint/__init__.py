"""Reading checkpoint files without running code from them.

Three formats:

- **PyTorch Lightning ``.ckpt``** (a ``torch.save`` zip archive): unpickled by
  :class:`RestrictedUnpickler`, whose allow-list names every global a checkpoint may reference.
  The allowed names map to functions *defined here* (tensor rebuilding, plain-data stand-ins for
  config classes), never to the objects the pickle asks for; any other name raises
  :class:`~difffusr_cli.errors.UnsafeCheckpointError` before anything is imported or called.
  ``torch.load(weights_only=True)`` cannot open the official files: their hyper-parameters are
  pickled ``easydict.EasyDict`` objects, which that loader refuses even when allow-listed.
- **``hparams.yaml``** written by Lightning: every nested mapping carries the tag
  ``!!python/object/new:easydict.EasyDict``; :func:`read_hparams_yaml` keeps the data
  (``dictitems``) and constructs no Python objects.
- **safetensors**: :func:`read_safetensors` / :func:`write_safetensors` (the converted format),
  with the string metadata of the safetensors header.

This package knows file formats only; what the tensors mean is decided in
``difffusr_cli.weights``.
"""

from __future__ import annotations

from difffusr_cli.checkpoint.hparams import find_hparams_yaml, read_hparams_yaml
from difffusr_cli.checkpoint.lightning import read_lightning_checkpoint
from difffusr_cli.checkpoint.records import ConfigDict
from difffusr_cli.checkpoint.safetensors_io import read_safetensors, write_json, write_safetensors
from difffusr_cli.checkpoint.unpickler import ALLOWED_GLOBALS, RestrictedUnpickler

__all__ = [
    "ALLOWED_GLOBALS",
    "ConfigDict",
    "RestrictedUnpickler",
    "find_hparams_yaml",
    "read_hparams_yaml",
    "read_lightning_checkpoint",
    "read_safetensors",
    "write_json",
    "write_safetensors",
]
