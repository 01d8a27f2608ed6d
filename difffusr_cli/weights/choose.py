"""Which repository file a manifest entry means: glob matching and the preference rule.

The official repository holds several checkpoints per model (``checkpoint/`` or ``checkpoints/``,
``best-*`` and ``latest-*`` under several ``version_N`` folders); this module picks one from a
file list (the Hub's listing at the pinned revision, or the cached snapshot's tree).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from difffusr_cli.errors import WeightsError

__all__ = ["choose_file", "glob_matches", "is_glob", "rank"]

_VERSION = re.compile(r"(?:^|/)version_(\d+)(?:/|$)")


def is_glob(pattern: str) -> bool:
    """True when ``pattern`` has glob characters (``*``, ``?``, ``[``)."""
    return any(c in pattern for c in "*?[")


@functools.lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regex over ``/``-separated paths.

    ``**/`` any folders (also none), ``*`` and ``?`` within one folder name, ``[...]`` a character
    class.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob_matches(pattern: str, files: Iterable[str]) -> list[str]:
    """The paths of ``files`` that ``pattern`` matches (whole path, see :func:`_regex`)."""
    regex = _regex(pattern)
    return sorted(f for f in files if regex.match(f))


def rank(path: str) -> tuple[int, int, int]:
    """Preference of a checkpoint path, larger is better.

    Inside a ``version_N`` folder before outside any, then the highest ``N``, then by file name
    ``best*`` > ``last.ckpt`` > ``latest*`` > anything else.
    """
    versions = _VERSION.findall(path)
    name = path.rsplit("/", 1)[-1]
    if name.startswith("best"):
        name_rank = 3
    elif name == "last.ckpt":
        name_rank = 2
    elif name.startswith("latest"):
        name_rank = 1
    else:
        name_rank = 0
    return (1 if versions else 0, int(versions[-1]) if versions else -1, name_rank)


def choose_file(patterns: Sequence[str], files: Iterable[str], where: str) -> str:
    """The file ``patterns`` (best first) select from ``files``.

    The first pattern with a match decides; several matches of it are ordered by :func:`rank`.

    Raises:
        WeightsError: nothing matches (``where`` names the repository), or the best matches tie.
    """
    listed = list(files)
    for pattern in patterns:
        matches = (
            glob_matches(pattern, listed)
            if is_glob(pattern)
            else ([pattern] if pattern in listed else [])
        )
        if not matches:
            continue
        best = sorted(matches, key=rank, reverse=True)
        if len(best) > 1 and rank(best[0]) == rank(best[1]):
            tied = [m for m in best if rank(m) == rank(best[0])]
            raise WeightsError(
                f"{where}: several files match {pattern!r} equally well ({', '.join(tied[:6])}); "
                'pin one with file = "..." in a copy of the manifest (DIFFFUSR_WEIGHTS_TOML)'
            )
        return best[0]
    raise WeightsError(
        f"{where}: no file matches {', '.join(repr(p) for p in patterns)}; "
        'pin one with file = "..." in a copy of the manifest (DIFFFUSR_WEIGHTS_TOML)'
    )
