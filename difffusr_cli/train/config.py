"""Training configuration: presets or TOML files, ``--set`` overrides, and their checks.

A configuration is a preset name (``small``, ``large``) or a TOML file with a ``[model]`` table
(the architecture, as in a checkpoint's JSON ``config``) and a ``[train]`` table
(hyperparameters), then ``section.key=value`` overrides from the command line. The result is a
frozen dataclass of the stage (``RGBTrainConfig`` / ``FusionTrainConfig``). Every ``[train]``
value is checked against its field's type first, so ``--set train.lr=abc`` fails with one line
naming the key and the expected type.
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from difffusr_cli.errors import InputError, WeightsError
from difffusr_cli.weights import read_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set KEY=VALUE`` option.

    ``KEY`` is dotted (``train.lr``, ``model.unet.inner_channel``; a bare key means ``train.KEY``);
    ``VALUE`` is read as a TOML value (``2e-4``, ``[100, 200]``, ``true``), else as a string.

    Raises:
        InputError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
    if "." not in key:
        key = f"train.{key}"
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(mapping: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``mapping`` with each dotted key of ``overrides`` set (``None`` skipped)."""
    result = json.loads(json.dumps(mapping))
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(f"--set {dotted}: {part} is a value, not a table")
            node = child
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return result


def load_config(
    spec: str | os.PathLike[str],
    presets: Mapping[str, Callable[[], Mapping[str, Any]]],
    overrides: Mapping[str, Any],
    build: Callable[[Mapping[str, Any], str], T],
) -> T:
    """The configuration named by ``spec`` (a preset name or a TOML file) with ``overrides``.

    Args:
        spec: a key of ``presets`` or a path to a TOML file (``[model]`` and ``[train]`` tables).
        presets: preset name → function returning its ``{"model": ..., "train": ...}`` mapping.
        overrides: dotted key → value (``{"train.batch_size": 4}``), applied last.
        build: turns the final mapping into the stage's config dataclass; ``where`` names the
            source for error messages.

    Raises:
        InputError: unknown preset or missing file, invalid TOML, or invalid values.
    """
    text = os.fspath(spec)
    if text in presets:
        base, where = dict(presets[text]()), f"--config {text}"
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(
                f"--config {text}: neither a preset ({', '.join(presets)}) "
                "nor an existing TOML file"
            )
        base, where = read_toml(path, "the training config", InputError), str(path)
    return build(apply_overrides(base, overrides), where)


class ModelTrainConfig:
    """Shared by the frozen training configs, which hold the network config in ``model``.

    Their TOML/JSON layout is a ``[model]`` section (``model_config.to_dict()``) and a ``[train]``
    one.

    Subclasses set ``model_config`` to the network config class (``SRConfig``, ``FusionConfig``).
    """

    model_config: ClassVar[Any]
    # What every subclass (a frozen dataclass) has; declared here for the shared methods. Plain
    # annotations of a non-dataclass base are not fields of the subclasses.
    __dataclass_fields__: ClassVar[dict[str, Any]]
    model: Any
    max_steps: int | None
    milestones: tuple[int, ...]

    def _check_counts(self, positive: Sequence[str], non_negative: Sequence[str] = ()) -> None:
        """The checks every training config shares.

        ``max_steps`` is None or ≥ 1 (0 is refused, it would train nothing), the named counts are
        positive (or ≥ 0) integers, ``checkpoint_every`` ≥ 0, valid milestones.

        Raises:
            ValueError: the first value that breaks a rule, named.
        """
        for name in positive:
            check_positive_int(getattr(self, name), name)
        steps = self.max_steps
        require(
            steps is None or (type(steps) is int and steps >= 1),
            f"max_steps must be an integer >= 1 (leave --max-steps out to train every epoch), "
            f"got {steps!r}",
        )
        for name in (*non_negative, "checkpoint_every"):
            check_positive_int(getattr(self, name), name, minimum=0)
        check_milestones(self.milestones)

    def to_dict(self) -> dict[str, Any]:
        """``{"model": ..., "train": ...}`` (JSON-able; the TOML layout)."""
        train = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
            if k != "model"
        }
        return {"model": self.model.to_dict(), "train": train}

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str) -> Any:
        """Inverse of :meth:`to_dict`; ``where`` names the source in errors.

        Raises:
            InputError: unknown sections or keys, invalid values.
        """
        unknown = set(mapping) - {"model", "train"}
        if unknown:
            raise InputError(
                f"{where}: unknown sections {', '.join(sorted(unknown))} "
                "(expected [model] and [train])"
            )
        try:
            model = cls.model_config.from_dict(mapping.get("model", {}))
        except (WeightsError, ValueError) as exc:
            raise InputError(f"{where}: [model] {exc}") from None
        train = dict(mapping.get("train", {}))
        train["model"] = model
        return dataclass_from_mapping(cls, train, where)


def dataclass_from_mapping(cls: type[T], values: Any, where: str) -> T:
    """Build the frozen dataclass ``cls`` from a mapping of its fields (lists become tuples).

    Raises:
        InputError: not a mapping, unknown keys, or a value the dataclass rejects; the message
            names ``where``.
    """
    if not isinstance(values, Mapping):
        raise InputError(f"{where}: [train] must be a table, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"{where}: unknown [train] keys {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    hints = get_type_hints(cls)
    for key, value in clean.items():
        if key in hints and not _matches(value, hints[key]):
            raise InputError(f"{where}: train.{key} must be {_describe(hints[key])}, got {value!r}")
    try:
        return cls(**clean)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` (for ``__post_init__`` checks)."""
    if not condition:
        raise ValueError(message)


def check_positive_int(value: Any, name: str, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is an int (not a bool) ≥ ``minimum``."""
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}",
    )


def check_milestones(milestones: Sequence[int]) -> None:
    """``ValueError`` unless the milestones are positive, strictly increasing integers."""
    require(
        all(isinstance(m, int) and m > 0 for m in milestones)
        and list(milestones) == sorted(set(milestones)),
        f"milestones must be increasing positive integers (epochs), got {list(milestones)}",
    )


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (lists already tuples) fits the type ``hint`` of a config field.

    Understands ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``None`` unions,
    ``tuple[X, ...]`` and ``tuple[X, Y]``; any other hint (a nested config) is not checked here.
    """
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        pairs = zip(value, args, strict=False)
        return len(value) == len(args) and all(_matches(v, a) for v, a in pairs)
    return True


def _describe(hint: Any) -> str:
    """Human words for a field type: ``a number``, ``an integer or none``, ``a list of …``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        words = [_describe(a) for a in get_args(hint) if a is not type(None)]
        optional = type(None) in get_args(hint)
        return " or ".join(words) + (" (or left out)" if optional else "")
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )
