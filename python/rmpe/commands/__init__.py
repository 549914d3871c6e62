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
