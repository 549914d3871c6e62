"""The PGPG figure (paper Figure 5): atomic poses beside their box-offset mixtures, as a PNG (matplotlib)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ..io import atomic_path
from .atoms import COCO_SKELETON

if TYPE_CHECKING:
    from .model import PGPG

__all__ = ["plot_pgpg"]


def plot_pgpg(model: "PGPG", path: Union[str, os.PathLike], atoms: Optional[Sequence[int]] = None,
              cols: int = 4) -> None:
    """Paper Figure 5: each atomic pose beside the marginal offset densities of its mixture (lines)
    over the histogram of its fitted offsets; written as a PNG (matplotlib Agg), atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atoms = list(range(model.n_atoms)) if atoms is None else [int(a) for a in atoms]
    rows = (len(atoms) + cols - 1) // cols
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(3.3 * cols * 2 * 0.8, 3.0 * rows + 0.4),
                             gridspec_kw=dict(width_ratios=[1, 1.5] * cols), squeeze=False)
    names = ("left x1", "top y1", "right x2", "bottom y2")
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    grid = np.linspace(-0.4, 0.4, 321)
    for i in range(rows * cols):
        axp, axd = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        if i >= len(atoms):
            axp.axis("off")
            axd.axis("off")
            continue
        a = atoms[i]
        pose = model.atoms[a]
        for j, k in COCO_SKELETON:
            side = "tab:purple" if j % 2 and k % 2 else "tab:brown" if j and k and not j % 2 and not k % 2 else "0.5"
            axp.plot(pose[[j, k], 0], pose[[j, k], 1], "-", color=side, lw=2)
        axp.plot(pose[:, 0], pose[:, 1], "o", color="0.1", ms=2.5)
        plo, phi = pose.min(0), pose.max(0)
        half = max(phi[0] - plo[0], phi[1] - plo[1]) / 2 + 0.25
        mid = (plo + phi) / 2
        axp.set_xlim(mid[0] - half, mid[0] + half)
        axp.set_ylim(mid[1] + half, mid[1] - half)  # image y points down
        axp.set_aspect("equal")
        axp.set_xticks([])
        axp.set_yticks([])
        if model.atom_uses_pooled[a]:
            tag = f"pooled mixture ({model.pooled.n_components} comp.)"
        else:
            lam = model.settings.get("atom_own_weight", [1.0] * model.n_atoms)[a]
            k = model.settings.get("atom_own_components", [0] * model.n_atoms)[a]
            tag = f"{k} comp., weight {lam:.2f} (+ pooled)"
        axp.set_title(f"atom {a}: {model.atom_counts[a]} persons", fontsize=9)
        mix = model.mixtures[a]
        x = model.train_offsets[model.train_atoms == a]
        for d in range(4):
            if len(x):
                axd.hist(x[:, d], bins=np.linspace(-0.4, 0.4, 33), density=True, alpha=0.18, color=colors[d])
            var = mix.covariances[:, d, d]
            dens = (mix.weights[:, None] * np.exp(-0.5 * (grid[None] - mix.means[:, d, None]) ** 2 / var[:, None])
                    / np.sqrt(2 * np.pi * var[:, None])).sum(0)
            axd.plot(grid, dens, color=colors[d], lw=1.6, label=names[d])
        axd.axvline(0, color="0.5", lw=0.6)
        axd.set_title(tag, fontsize=9)
        axd.set_xlabel("offset / GT side", fontsize=8)
        axd.tick_params(labelsize=7)
        axd.set_yticks([])
        if i == 0:
            axd.legend(fontsize=7, loc="upper left", frameon=False)
    st = model.settings
    fig.suptitle(f"PGPG atomic poses (torso-aligned; purple left, brown right) and the offsets of detected boxes "
                 f"from GT boxes, per side / GT side: mixture density (lines) over the fitted offsets (bars)\n"
                 f"({st.get('n_offsets', len(model.train_offsets))} matched persons, score >= {st.get('score_thresh')}, "
                 f"IoU >= {st.get('iou_thresh')})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
