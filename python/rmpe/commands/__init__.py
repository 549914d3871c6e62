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
