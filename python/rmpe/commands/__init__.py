"""One module per subcommand of ``python -m rmpe``.

Each module defines ``register(subparsers)``, which adds its parser and sets
``func=run`` on it, where ``run(args) -> int`` does the work. Modules import
their heavy dependencies inside ``run`` so that ``rmpe --help`` stays fast.
"""
# subcommand name -> module name, in the order ``--help`` lists them
COMMANDS = {
    "run": "run",
    "nms": "nms",
    "tune-nms": "tune_nms",
    "eval": "eval",
    "fit-pgpg": "fit_pgpg",
    "train": "train",
    "bench": "bench",
}

# Upper bounds of flags whose absurd values would not fail cleanly: torch.set_num_threads(10**8) crashes
# the process; an input side of 10**5 pixels fails in the allocator.
MAX_THREADS = 1024
MAX_INPUT_SIDE = 2048


def check_threads(threads) -> None:
    """``--threads``: None (the default) or 1..MAX_THREADS; CommandError otherwise."""
    from ..cli import CommandError

    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise CommandError(f"--threads must be at least 1 and at most {MAX_THREADS}, got {threads}")


def check_input_size(size) -> None:
    """``--input-size H W``: each side at most MAX_INPUT_SIDE (the lower bounds are the model's to check)."""
    from ..cli import CommandError

    if max(size) > MAX_INPUT_SIDE:
        raise CommandError(f"--input-size sides must be at most {MAX_INPUT_SIDE} pixels, got {tuple(size)}")


# ------------------------------------------------------------------ one vocabulary of pose-NMS flags
# run, nms and tune-nms share these spellings and choices (rmpe.nms.runtime's RANKS/OUTPUTS, kept here so
# that building the parser imports no torch).
NMS_METHODS = ("alphapose", "paper", "oks", "soft-oks")
NMS_RANKS = ("proposal", "joints", "box")
NMS_SCORES = ("rank", "proposal", "box-joints", "joints", "alphapose")
RENAMED_FLAGS = (("--method", "--nms"), ("--params", "--nms-params"), ("--rank", "--nms-rank"),
                 ("--score", "--nms-score"))


_SCORING_DEFAULT = "the parameters file's, else the method's own: joints for alphapose, proposal otherwise"


def add_nms_flags(group, method_help: str, none: bool = False, params: bool = True, default_method=None,
                  scoring_default: str = _SCORING_DEFAULT) -> None:
    """``--nms METHOD``, ``--nms-params FILE|tuned``, ``--nms-rank``, ``--nms-score`` on a parser or group;
    ``none`` adds ``none`` to the methods. The old spellings of ``rmpe nms``/``tune-nms`` (``--method``,
    ``--params``, ``--rank``, ``--score``) are kept hidden, to say what they became (:func:`check_renamed`)."""
    import argparse

    group.add_argument("--nms", default=default_method, choices=NMS_METHODS + (("none",) if none else ()),
                       metavar="METHOD", help="pose NMS: alphapose (AlphaPose exactly), paper, oks, soft-oks"
                                              + (" or none" if none else "") + f" ({method_help})")
    if params:
        group.add_argument("--nms-params", default=None, metavar="FILE",
                           help="an NMS parameters file (rmpe tune-nms), or 'tuned' for the shipped file of --nms "
                                "(default: oks's)")
    group.add_argument("--nms-rank", default=None, choices=NMS_RANKS,
                       help="what orders the NMS: the pose score (proposal: det_score x mean confident joint "
                            f"score), the mean joint score (joints), the detector score (box) (default: "
                            f"{scoring_default})")
    group.add_argument("--nms-score", default=None, choices=NMS_SCORES,
                       help="the kept pose's score: its ranking score (rank), proposal, box-joints, joints or "
                            f"AlphaPose's (alphapose) (default: {scoring_default})")
    for old, new in RENAMED_FLAGS:
        if new == "--nms-params" and not params:
            continue
        group.add_argument(old, dest="renamed_" + old[2:], default=None, help=argparse.SUPPRESS)


def check_renamed(args) -> None:
    """A renamed flag names its new spelling (CommandError)."""
    from ..cli import CommandError

    for old, new in RENAMED_FLAGS:
        if getattr(args, "renamed_" + old[2:], None) is not None:
            raise CommandError(f"{old} is now {new} (one vocabulary of NMS flags for run, nms and tune-nms)")
