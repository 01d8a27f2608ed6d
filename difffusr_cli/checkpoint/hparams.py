"""Reading Lightning's ``hparams.yaml`` as plain data, constructing no Python objects."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from difffusr_cli.errors import UnsafeCheckpointError, WeightsError


class _HparamsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads Lightning's Python-tagged mappings as plain dicts."""


_MAPPING_CLASS_TAGS = (
    "tag:yaml.org,2002:python/object/new:easydict.EasyDict",
    "tag:yaml.org,2002:python/object/new:pytorch_lightning.utilities.parsing.AttributeDict",
    "tag:yaml.org,2002:python/object/new:lightning_fabric.utilities.data.AttributeDict",
    "tag:yaml.org,2002:python/object/new:lightning.fabric.utilities.data.AttributeDict",
    "tag:yaml.org,2002:python/object:argparse.Namespace",
)


def _construct_plain_mapping(loader: _HparamsLoader, node: yaml.Node) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a mapping for {node.tag}", node.start_mark
        )
    fields = loader.construct_mapping(node, deep=True)
    if node.tag.startswith("tag:yaml.org,2002:python/object/new:"):
        # `!!python/object/new:` records the dict items under `dictitems` (and a copy under
        # `state`).
        items = fields.get("dictitems") or {}
        state = fields.get("state") or {}
        merged = dict(state) if isinstance(state, Mapping) else {}
        merged.update(items if isinstance(items, Mapping) else {})
        return merged
    return dict(fields)  # `!!python/object:` (Namespace): the mapping is the object's fields


def _construct_sequence_as_tuple(loader: _HparamsLoader, node: yaml.Node) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node, deep=True))


def _refuse_python_tag(loader: _HparamsLoader, suffix: str, node: yaml.Node) -> Any:
    raise UnsafeCheckpointError(
        f"refused the YAML tag !!python/{suffix}: only plain data and config-dict tags are read"
    )


for _tag in _MAPPING_CLASS_TAGS:
    _HparamsLoader.add_constructor(_tag, _construct_plain_mapping)
_HparamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_sequence_as_tuple)
_HparamsLoader.add_multi_constructor("tag:yaml.org,2002:python/", _refuse_python_tag)


def read_hparams_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Lightning ``hparams.yaml`` as plain data.

    ``!!python/object/new:easydict.EasyDict`` (and Lightning's AttributeDict / argparse Namespace)
    mappings become dicts of their items; any other ``!!python/`` tag is refused.

    Raises:
        WeightsError: unreadable file, YAML error, a refused tag, or a top level that is not a
            mapping.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightsError(f"{source}: cannot read hparams file ({exc.strerror or exc})") from exc
    try:
        data = yaml.load(text, Loader=_HparamsLoader)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise WeightsError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WeightsError(
            f"{source}: hparams file holds a {type(data).__name__}, expected a mapping"
        )
    return data


def find_hparams_yaml(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The ``hparams.yaml`` of a checkpoint, if there is one.

    Looked for beside the checkpoint, then two folders up (Lightning's
    ``<exp>/version_N/checkpoints/last.ckpt`` next to ``<exp>/version_N/hparams.yaml``).
    """
    ckpt = Path(checkpoint)
    for folder in (ckpt.parent, ckpt.parent.parent):
        candidate = folder / "hparams.yaml"
        if candidate.is_file():
            return candidate
    return None
