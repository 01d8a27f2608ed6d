"""What ``difffusr info`` reports about a product, as plain data (no terminal rendering here).

:func:`collect_info` opens a product and returns the JSON-ready info dict (schema in
docs/inputs.md); :func:`summary_lines`, :func:`band_rows` and :func:`footer_lines` turn it into
plain text a front end lays out. The rich table lives in :mod:`difffusr_cli.cli.info_table`.
"""

from __future__ import annotations

from pathlib import Path

from difffusr_cli.io.scene import open_scene

#: Column titles of the band table, in order (``band_rows`` gives one string per column).
BAND_COLUMNS = ("band", "gsd (m)", "size", "ratio", "data", "DN offset", "scale", "file")

#: How each convention reads in the ``data`` column.
_CONVENTION_LABEL = {"dn": "DN", "reflectance": "reflectance"}


def collect_info(
    path: str | Path, *, scale: float | None = None, offset: float | None = None
) -> dict:
    """Open ``path`` and return the ``difffusr info --json`` object (schema in docs/inputs.md).

    Missing bands are listed (``found: false``) without failing: the processing commands are the
    ones that refuse an incomplete product.

    Raises:
        InputError: the product cannot be opened (see :func:`~difffusr_cli.io.scene.open_scene`).
    """
    with open_scene(path, scale=scale, offset=offset) as scene:
        return scene.info()


def summary_lines(info: dict) -> list[str]:
    """The lines above the band table: product fields and the 10 m grid (no title line)."""
    src, grid = info["source"], info["grid"]
    lines = [
        f"  {key.replace('_', ' ')}: {src[key] if src[key] is not None else '-'}"
        for key in ("product_id", "tile", "datetime", "processing_baseline", "processing_level")
    ]
    a, _, c, _, e, f = grid["transform"]
    lines.append(
        f"  10 m grid: {grid['width']} × {grid['height']} px, {grid['crs']}, "
        f"origin ({c:.2f}, {f:.2f}), pixel {a:g} × {-e:g}"
    )
    return lines


def data_label(entry: dict) -> str:
    """The ``data`` cell of a band: its dtype and the convention applied (``"uint16 DN"``)."""
    if not entry["found"]:
        return "-"
    convention = _CONVENTION_LABEL.get(entry.get("convention") or "dn", "DN")
    return f"{entry.get('dtype') or '?'} {convention}"


def band_rows(info: dict) -> list[dict[str, str | bool]]:
    """One dict per band: ``BAND_COLUMNS`` → cell text, plus ``found`` (bool).

    A band not found has ``size`` ``"not found"``.
    """
    radio = info["radiometry"]
    rows: list[dict[str, str | bool]] = []
    for entry in info["bands"]:
        name = entry["name"]
        rows.append(
            {
                "band": name,
                "gsd (m)": f"{entry['gsd']:g}",
                "size": f"{entry['width']} × {entry['height']}" if entry["found"] else "not found",
                "ratio": str(entry["ratio"]) if entry["ratio"] else "-",
                "data": data_label(entry),
                "DN offset": f"{radio['offsets'][name]:g}",
                "scale": f"{radio['scale'][name]:g}",
                "file": Path(entry["path"]).name if entry["path"] else "-",
                "found": bool(entry["found"]),
            }
        )
    return rows


def footer_lines(info: dict) -> list[str]:
    """The lines below the band table: the convention and where it came from."""
    radio = info["radiometry"]
    found = [b for b in info["bands"] if b["found"]]
    lines = []
    if found and all(b.get("convention") == "reflectance" for b in found):
        lines.append("  reflectance = pixel value (floating-point bands)")
    else:
        quant = radio["quantification"]
        quant_text = f"{quant:g}" if isinstance(quant, (int, float)) else "per band"
        lines.append(f"  reflectance = (DN + offset) / {quant_text}")
        if any(b.get("convention") == "reflectance" for b in found):
            names = ", ".join(b["name"] for b in found if b.get("convention") == "reflectance")
            lines.append(f"  floating-point bands taken as reflectance: {names}")
    lines.append(f"  radiometry from: {radio['source']}")
    return lines


def missing_bands(info: dict) -> list[str]:
    """Names of the bands the product lacks."""
    return [b["name"] for b in info["bands"] if not b["found"]]
