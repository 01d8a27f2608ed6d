"""Pretrained weights: the manifest, the Hub cache, safe loading and conversion.

- **Manifest** (:func:`load_manifest`): ``difffusr_cli/weights.toml``, one ``[models.NAME]``
  entry per model (``DIFFFUSR_WEIGHTS_TOML`` points at another file, e.g. a copy with a
  ``file`` or ``sha256`` filled in).
- **Resolution** (:func:`resolve`): a path is used as is; a name is looked up in the manifest,
  downloaded through ``huggingface_hub`` (honouring ``HF_HOME``, ``HF_HUB_CACHE``,
  ``HF_HUB_OFFLINE``, ``HF_TOKEN``, ``HF_ENDPOINT``), checked against its sha256 and converted
  once to safetensors + JSON in difffusr's cache (``$DIFFFUSR_CACHE``, default
  ``<HF_HUB_CACHE>/difffusr-converted/NAME/<commit>/``).
- **Loading** (:func:`load_weights`): Lightning ``.ckpt`` through the restricted unpickler of
  :mod:`difffusr_cli.checkpoint` (no pickled code ever runs), converted safetensors + JSON, bare
  safetensors in the official key layout (architecture inferred from names and shapes), and the
  ``weights/``-prefixed compat files.
- **Conversion** (:func:`convert`): any of those → ``NAME.safetensors`` + ``NAME.json``.

When the Hub cannot be reached and nothing is cached, the error says how to proceed within a few
seconds: reachability is probed with a short timeout before huggingface_hub (whose retries
take ~25 s) is asked anything.
"""

# Public names, re-exported from the submodules (import from here, not from the submodules).
from difffusr_cli.weights.format import (
    INFERENCE_ONLY_DROPS,
    LoadedWeights,
    convert,
    load_weights,
    save_converted,
    save_network,
    sha256_file,
)
from difffusr_cli.weights.hub import cache_root, hub_cache_dir
from difffusr_cli.weights.manifest import (
    DEMO_MODELS,
    FORMAT_VERSION,
    PACKAGE_ROOT,
    RGB_ARCHITECTURE,
    ModelEntry,
    ModelKind,
    default_model_name,
    load_manifest,
    manifest_path,
    read_toml,
)
from difffusr_cli.weights.report import Reporter, StderrReporter
from difffusr_cli.weights.resolve import (
    CachedModel,
    PullResult,
    list_models,
    locate,
    pull,
    resolve,
)

__all__ = [
    "DEMO_MODELS",
    "FORMAT_VERSION",
    "INFERENCE_ONLY_DROPS",
    "PACKAGE_ROOT",
    "RGB_ARCHITECTURE",
    "CachedModel",
    "LoadedWeights",
    "ModelEntry",
    "ModelKind",
    "PullResult",
    "Reporter",
    "StderrReporter",
    "cache_root",
    "convert",
    "default_model_name",
    "hub_cache_dir",
    "list_models",
    "load_manifest",
    "load_weights",
    "locate",
    "manifest_path",
    "pull",
    "read_toml",
    "resolve",
    "save_converted",
    "save_network",
    "sha256_file",
]
