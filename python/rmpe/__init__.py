"""rmpe: the RMPE system (Fang et al., ICCV 2017) built on the rmpe_ext operators.

    rmpe.sstn      symmetric STN (STN + SDTN) around any SPPE, the parallel SPPE, the reference SPPE, training
    rmpe.pgpg      pose-guided proposals generator (atomic poses, per-atom box-offset mixtures)
    rmpe.nms       pose NMS: parameters and run-time NMS (rmpe.nms.search: the data-driven parameter search)
    rmpe.pipeline  frames + person boxes -> crops -> SPPE -> decode -> pose NMS -> COCO results
    rmpe.coco      COCO I/O: ground truth, results, proposal files
    rmpe.evaluate  the COCO keypoint evaluator (pycocotools, prepared once, OKS cached)
    rmpe.io        generic file helpers: atomic writes, output-path checks, JSON
    rmpe.distributed  scale-out on torch.distributed (torchrun): process group, sharding, gathering
    python -m rmpe ...  the command line (``rmpe --help``; one module per command in rmpe.commands)

This package imports rmpe_ext; rmpe_ext never imports it.
"""
__version__ = "0.1.0"
