"""The symmetric STN and its training (RMPE paper section 3.1).

    model.py      SSTN = STN + SPPE + SDTN, the parallel SPPE, the losses, centre_displacement
    hourglass.py  the reference SPPE (a small stacked hourglass)
    blazepose_sppe.py  BlazePose (torch, frozen) as the SSTN's SPPE: a real pose model in front of the STN
    trainer.py    Trainer / TrainConfig: resumable training, evaluate, set_seed
    datasets.py   COCO persons -> proposal crops with heatmap targets (CropSet, ResampledCrops)
    augment.py    box augmenters that make the proposals (jitter, PGPG)

A new SPPE goes beside hourglass.py; a new source of training boxes in augment.py. This package re-exports
model.py's names (``from rmpe.sstn import SSTN``); the others are imported from their modules.
"""
from .model import *  # noqa: F401,F403
from .model import __all__  # noqa: F401
