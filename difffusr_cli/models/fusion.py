"""The per-group fusion networks in one module, laid out like the official Lightning module.

:class:`FusionNetwork` holds one branch per band group under the official attribute names
(``rrdb_block_10_fusion``, ``rrdb_block_20_fusion``, ``rrdb_block_60_fusion``; the MTF variant
kept those names) in the official order (RRDB: 60, 20, 10; MTF: 10, 20, 60), so its
``state_dict()`` equals ``checkpoint["state_dict"]`` of the official fusion checkpoints.

Branch channel orders (the authors' x1..x12): every tensor a branch sees or returns lists its
bands as in :data:`BRANCH_BANDS` — the 10 m group as R, G, B, NIR (B04, B03, B02, B08), the
others in product order. The RRDB branches also take the finer groups' bands
(:meth:`FusionNetwork.input_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from difffusr_cli.bands import GROUP_RATIO, GroupName
from difffusr_cli.models.config import FusionArch, FusionConfig
from difffusr_cli.models.fusion_mtf import MTFNetFusion
from difffusr_cli.models.fusion_rrdb import FusionRRDBNet

#: Official attribute name of each group's branch.
BRANCH_ATTRS: dict[GroupName, str] = {
    "10m": "rrdb_block_10_fusion",
    "20m": "rrdb_block_20_fusion",
    "60m": "rrdb_block_60_fusion",
}
#: Attribute (= state-dict) order of the branches per architecture.
BRANCH_ORDER: dict[FusionArch, tuple[GroupName, ...]] = {
    "rrdb": ("60m", "20m", "10m"),
    "mtf": ("10m", "20m", "60m"),
}
#: Bands a branch outputs, in its channel order.
BRANCH_BANDS: dict[GroupName, tuple[str, ...]] = {
    "10m": ("B04", "B03", "B02", "B08"),
    "20m": ("B05", "B06", "B07", "B8A", "B11", "B12"),
    "60m": ("B01", "B09"),
}
#: Groups whose bands an RRDB branch takes as its multispectral input (finest first).
RRDB_INPUT_GROUPS: dict[GroupName, tuple[GroupName, ...]] = {
    "10m": ("10m",),
    "20m": ("10m", "20m"),
    "60m": ("10m", "20m", "60m"),
}
#: Resolution ratio of each group to the 2.5 m output grid (4, 8, 24).
OUTPUT_RATIO: dict[GroupName, int] = {g: 4 * r for g, r in GROUP_RATIO.items()}
#: Channels of the guidance image (z-scored SR R, G, B).
GUIDANCE_CHANNELS = 3


class FusionNetwork(nn.Module):
    """The three fusion branches of one checkpoint.

    ``forward(guidance, ms)``: ``guidance`` ``(B, 3, H, W)`` z-scored SR R, G, B on the 2.5 m grid;
    ``ms`` maps each group to its branch input ``(B, C_in, h, w)`` z-scored, the
    :data:`BRANCH_BANDS` of :meth:`input_groups` concatenated (RRDB: already on the guidance grid;
    MTF: any grid, resized inside). Returns each group's ``(B, C_out, H, W)`` z-scored bands,
    channels as :data:`BRANCH_BANDS`.

    Args:
        config: architecture (``"rrdb"`` or ``"mtf"``) and widths shared by the three branches.
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        for group in BRANCH_ORDER[config.arch]:
            self.add_module(BRANCH_ATTRS[group], self._make_branch(config, group))

    @staticmethod
    def _make_branch(config: FusionConfig, group: GroupName) -> FusionRRDBNet | MTFNetFusion:
        out = len(BRANCH_BANDS[group])
        if config.arch == "rrdb":
            ms_in = sum(len(BRANCH_BANDS[g]) for g in RRDB_INPUT_GROUPS[group])
            return FusionRRDBNet(GUIDANCE_CHANNELS, ms_in, out, config.nf, config.nb, config.gc)
        return MTFNetFusion(
            out,
            OUTPUT_RATIO[group],
            config.nf,
            config.nb,
            config.gc,
            GUIDANCE_CHANNELS,
            injection=config.injection,
        )

    def branch(self, group: GroupName) -> FusionRRDBNet | MTFNetFusion:
        """The branch network of ``group``.

        Args:
            group: ``"10m"``, ``"20m"`` or ``"60m"``.

        Returns:
            The :class:`FusionRRDBNet` or :class:`MTFNetFusion` registered for ``group``.
        """
        branch: FusionRRDBNet | MTFNetFusion = getattr(self, BRANCH_ATTRS[group])
        return branch

    def input_groups(self, group: GroupName) -> tuple[GroupName, ...]:
        """Groups whose bands make ``group``'s multispectral input (RRDB: the finer ones too).

        Args:
            group: the branch's group.

        Returns:
            The groups, finest first; the branch input concatenates their :data:`BRANCH_BANDS`.
        """
        return RRDB_INPUT_GROUPS[group] if self.config.arch == "rrdb" else (group,)

    @property
    def receptive_radius(self) -> int:
        """Largest local receptive radius of the branches, in 2.5 m output pixels."""
        return max(self.branch(g).receptive_radius for g in BRANCH_ATTRS)

    def forward(self, guidance: Tensor, ms: Mapping[GroupName, Tensor]) -> dict[GroupName, Tensor]:
        """Run the three branches.

        Args:
            guidance: ``(B, 3, H, W)`` float32 SR R, G, B on the 2.5 m grid, z-scored
                (``(reflectance − mean) / std`` with the B04, B03, B02 statistics; unbounded).
            ms: for each of ``"10m"``, ``"20m"``, ``"60m"``, a ``(B, C_in, h, w)`` float32
                z-scored (same convention) branch input, channels the :data:`BRANCH_BANDS` of
                :meth:`input_groups` concatenated — RRDB: C_in = 4, 10, 12 and ``(h, w)`` =
                ``(H, W)``; MTF: C_in = 4, 6, 2 on any grid (resized bilinearly inside).

        Returns:
            Group → ``(B, C_out, H, W)`` float32 z-scored bands in :data:`BRANCH_BANDS` order
            (C_out = 4, 6, 2).
        """
        # the official eval path runs 10 m, then 20 m, then 60 m
        return {g: self.branch(g)(guidance, ms[g]) for g in ("10m", "20m", "60m")}
