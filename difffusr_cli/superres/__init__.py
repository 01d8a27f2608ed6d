"""The ``difffusr superres`` library: Sentinel-2 L2A scenes → 12-band 2.5 m GeoTIFFs.

Modules (each imports only those above it in this list):

- :mod:`.options` — :class:`SuperresOptions` and its validation, shared constants;
- :mod:`.progress` — :class:`ProgressSink`, how a run reports progress (the library prints nothing);
- :mod:`.models` — model loading and provenance (:class:`Models`, :class:`ModelInfo`),
  ``--compile`` / ``--channels-last`` (:func:`accelerate`);
- :mod:`.compute` — defaults chosen for the device and models: patch, fusion tiles, batch sizes;
- :mod:`.region` — the region processed for a window (the window grown by context);
- :mod:`.reflectance` — reflectance consistency of the fused product, block by block;
- :mod:`.render` — the requested window, its tiling and the block-by-block :class:`Renderer`;
- :mod:`.resume` — the progress record and the settings fingerprint;
- :mod:`.outputs` — output naming, product tags, :class:`RunSummary`;
- :mod:`.batch` — the batch report, the inputs list and its shards, the skip rule;
- :mod:`.run` — :func:`superres_scene` (one scene), :func:`superres_example`;
- :mod:`.many` — :func:`superres_many` (what the CLI calls): checks, then the scenes in this
  process or, with a Dask client, as tasks of :mod:`.distributed` (imported only then).

Import the public names from this package (``from difffusr_cli.superres import superres_many``).
"""

from __future__ import annotations

from difffusr_cli.superres.batch import BatchReport, read_inputs_file
from difffusr_cli.superres.many import superres_many
from difffusr_cli.superres.models import (
    FusionFn,
    ModelInfo,
    Models,
    SuperResolver,
    accelerate,
    build_models,
    load_models,
)
from difffusr_cli.superres.options import (
    FUSION_METHODS,
    NODATA_RULE,
    PRODUCT_SUFFIX,
    FusionMethod,
    OutputDType,
    SuperresOptions,
)
from difffusr_cli.superres.outputs import RunSummary, output_paths, product_stem, product_tags
from difffusr_cli.superres.progress import LoggingProgress, ProgressSink
from difffusr_cli.superres.render import Counters, Renderer, make_layout, resolve_region
from difffusr_cli.superres.resume import ProgressFile, fingerprint, progress_path_for
from difffusr_cli.superres.run import (
    EXAMPLE_SIZE,
    superres_example,
    superres_scene,
)

__all__ = [
    "EXAMPLE_SIZE",
    "BatchReport",
    "FUSION_METHODS",
    "NODATA_RULE",
    "PRODUCT_SUFFIX",
    "Counters",
    "FusionFn",
    "FusionMethod",
    "LoggingProgress",
    "ModelInfo",
    "Models",
    "OutputDType",
    "ProgressFile",
    "ProgressSink",
    "Renderer",
    "RunSummary",
    "SuperResolver",
    "SuperresOptions",
    "accelerate",
    "build_models",
    "fingerprint",
    "load_models",
    "make_layout",
    "output_paths",
    "product_stem",
    "product_tags",
    "progress_path_for",
    "read_inputs_file",
    "resolve_region",
    "superres_example",
    "superres_many",
    "superres_scene",
]
