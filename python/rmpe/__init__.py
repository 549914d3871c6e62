"""rmpe: the RMPE system (Fang et al., ICCV 2017) built on the rmpe_ext operators.

    rmpe.sstn      symmetric STN (STN + SDTN) around any SPPE, the parallel SPPE, training
    rmpe.pgpg      pose-guided proposals generator (atomic poses, per-atom box-offset mixtures)
    rmpe.nms_search data-driven pose-NMS parameters (coordinate search on COCO keypoint AP)
    rmpe.pipeline  frames + person boxes -> crops -> SPPE -> decode -> pose NMS -> COCO results
    rmpe.eval      COCO keypoint evaluation (pycocotools)
    python -m rmpe ...  the command line (``rmpe --help``)

This package imports rmpe_ext; rmpe_ext never imports it.
"""
__version__ = "0.1.0"
