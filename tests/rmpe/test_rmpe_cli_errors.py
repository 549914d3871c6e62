"""The command line's promise (README): on bad input every ``rmpe`` command prints one line
``rmpe <cmd>: error: ...`` naming the file/option and what is wrong, exits 2 and leaves no file behind;
output paths are checked before any work; SIGTERM cleans up like Ctrl-C. Found by trying the CLI from
outside: each case below failed (a traceback and exit 1, a message that did not say what was wrong, a
stray file) before the fix."""
import gzip
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

from rmpe.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROPOSALS = str(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz")
GT = str(ROOT / "data" / "gt_dev.json.gz")
COCO4 = ROOT / "data" / "coco4"
DETS = str(COCO4 / "test_coco_det_AP_H_56.json")
GT4 = str(COCO4 / "test_coco.json")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def records():
    return json.load(gzip.open(PROPOSALS, "rt"))


@pytest.fixture(scope="module")
def gt_dev():
    return json.load(gzip.open(GT, "rt"))


@pytest.fixture(scope="module")
def gt4():
    return json.loads(pathlib.Path(GT4).read_text())


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


def fails(capsys, argv, *match, folder=None):
    """Exit 2 with one line ``rmpe <cmd>: error: ...`` holding every string of ``match``; no file added
    to (or removed from) ``folder``. Returns the message."""
    before = _listing(folder) if folder else None
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "\n" not in err and err.startswith(f"rmpe {argv[0]}: error: "), err
    for m in match:
        assert m in err, err
    if folder:
        assert _listing(folder) == before, err
    return err


class W:
    """``w(name, obj)``: writes ``obj`` (a str as is, else as JSON) to ``folder/name``, returns the path."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self, name, obj):
        p = self.folder / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return str(p)


@pytest.fixture
def w(tmp_path):
    return W(tmp_path)


# ------------------------------------------------------------------ output paths, checked before the work

@pytest.fixture(scope="module")
def unwritable():
    """A folder in which creating a file fails (as a user: a 0o555 folder; as root, which writes through
    permission bits: /sys, where even root cannot create files)."""
    if os.geteuid() != 0:
        d = pathlib.Path(tempfile.mkdtemp())
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        d.rmdir()
        return
    try:
        fd, p = tempfile.mkstemp(dir="/sys")
    except OSError:
        yield pathlib.Path("/sys")
        return
    os.close(fd)
    os.remove(p)
    pytest.skip("no unwritable folder found: running as root and /sys accepts files")


# (command line with OUT standing for the output, the option's name, what the output is). The inputs do
# not exist: a check that ran after reading them would report them instead of the output.
WRITERS = [
    (["nms", "missing.json", "-o", "OUT"], "-o", "file"),
    (["tune-nms", "missing.json", "missing_gt.json", "-o", "OUT"], "-o", "file"),
    (["fit-pgpg", "missing.json", "missing_dets.json", "-o", "OUT.npz"], "-o", "file"),
    (["fit-pgpg", "missing.json", "missing_dets.json", "-o", "m.npz", "--plot", "OUT.png"], "--plot", "file"),
    (["run", "no_images", "missing.json", "-o", "OUT"], "-o", "file"),
    (["run", "no_images", "missing.json", "-o", "r.json", "--pre-nms", "OUT"], "--pre-nms", "file"),
    (["run", "no_images", "missing.json", "-o", "r.json", "--render", "OUT"], "--render", "folder"),
    (["train", "--data", "missing.json", "--images", "no_images", "--out", "OUT"], "--out", "folder"),
]


def _argv(template, out):
    return [a.replace("OUT", out) if "OUT" in a else a for a in template]


@pytest.mark.parametrize("template,option,kind", WRITERS, ids=[f"{t[0]} {o}" for t, o, _ in WRITERS])
def test_bad_output_paths_fail_before_the_work(tmp_path, capsys, unwritable, template, option, kind):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the inputs named in WRITERS are relative: none exists
    try:
        # under a file (was FileExistsError, traceback, exit 1)
        fails(capsys, _argv(template, "afile/out"), option, "'afile' is a file, not a folder", folder=tmp_path)
        # deeper under a file (was NotADirectoryError)
        fails(capsys, _argv(template, "afile/sub/out"), option, "is a file, not a folder", folder=tmp_path)
        if kind == "file":
            # an existing folder (was IsADirectoryError, raised only after all the work)
            fails(capsys, [a.replace("OUT.npz", "adir").replace("OUT.png", "adir").replace("OUT", "adir")
                           for a in template], option, "is a folder", folder=tmp_path)
        else:
            fails(capsys, _argv(template, "afile"), option, "exists and is not a folder", folder=tmp_path)
        # somewhere no file can be created (was PermissionError, or 'No such file' naming a temporary file)
        fails(capsys, _argv(template, str(unwritable / "rmpe_out" / "out")), option, "cannot write",
              str(unwritable), folder=tmp_path)
        # an empty name
        fails(capsys, [a.replace("OUT.npz", "").replace("OUT.png", "").replace("OUT", "") for a in template],
              option, "empty", folder=tmp_path)
    finally:
        os.chdir(cwd)


def test_unwritable_output_after_the_check_is_one_line(tmp_path, capsys, monkeypatch):
    """A write that fails anyway (the folder changed after the check, a full disk): one line, exit 2,
    no temporary file, through the one error translation of rmpe.cli (not a check per command)."""
    import rmpe.io

    def no_space(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "kept.json"))

    monkeypatch.setattr(rmpe.io.json, "dump", no_space)
    out = tmp_path / "kept.json"
    fails(capsys, ["nms", PROPOSALS, "-o", str(out)], "No space left on device", "kept.json", folder=tmp_path)


def test_two_outputs_on_one_path(tmp_path, capsys):
    out = str(tmp_path / "r.json")
    # was: exit 0, the pre-NMS poses silently overwritten by the results
    fails(capsys, ["run", str(COCO4), DETS, "-o", out, "--pre-nms", out], "-o and --pre-nms", "same",
          folder=tmp_path)


def test_output_parents_are_still_created(tmp_path, capsys):
    """The check does not forbid what worked: a missing parent folder is created at the write."""
    out = tmp_path / "new" / "deeper" / "kept.json"
    assert main(["nms", PROPOSALS, "-o", str(out), "--method", "oks"]) == 0
    assert json.loads(out.read_text())
    assert _listing(tmp_path / "new") == ["deeper", "deeper/kept.json"]


def test_fit_pgpg_failing_plot_leaves_no_model(tmp_path, capsys, monkeypatch):
    """The model and the figure are one result: a failed figure removes the model written before it
    (was: the model stayed behind)."""
    import rmpe.pgpg

    def broken(self, path, *a, **k):
        raise ValueError("the figure could not be drawn")

    monkeypatch.setattr(rmpe.pgpg.PGPG, "plot", broken)
    fails(capsys, ["fit-pgpg", GT4, DETS, "-o", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "f.png"),
                   "-q", "--atoms", "2", "--min-atom-samples", "1"], "could not be drawn", folder=tmp_path)


def test_train_checkpoint_names_taken_by_folders(tmp_path, capsys):
    (tmp_path / "ck" / "history.json").mkdir(parents=True)
    # was: IsADirectoryError after the first epoch, last.pt left behind
    fails(capsys, ["train", "--data", GT4, "--images", str(COCO4), "--out", str(tmp_path / "ck"), "--epochs", "1"],
          "--out", "history.json", "is a folder", folder=tmp_path)


# ------------------------------------------------------------------ SIGTERM while writing

_SIGTERM_CHILD = r"""
import json, os, signal, sys
import torch
torch.set_num_threads(1)
real_dump = json.dump

def dump_then_sigterm(obj, f, **kw):
    f.write("[")  # part of the file is written: the temporary exists
    f.flush()
    os.kill(os.getpid(), signal.SIGTERM)
    real_dump(obj, f, **kw)

json.dump = dump_then_sigterm  # rmpe.io.write_json's writer
from rmpe.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_writing_leaves_no_temporary(tmp_path):
    out = tmp_path / "kept.json"
    p = subprocess.run([sys.executable, "-c", _SIGTERM_CHILD, "nms", PROPOSALS, "-o", str(out), "--method", "oks"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    # was: killed by the signal (-15) with .kept.json.XXXX.tmp left beside the output
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, p.stderr)
    assert p.stderr.strip().splitlines()[-1] == "rmpe nms: terminated", p.stderr
    assert _listing(tmp_path) == []


def test_sigterm_handler_is_restored(tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["nms", PROPOSALS, "-o", str(tmp_path / "k.json"), "--method", "oks"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------ bugs stay visible

def test_unknown_errors_still_show_a_traceback(tmp_path, monkeypatch):
    """Bugs stay visible: an exception that is not an input error propagates (exit 1 with a traceback)."""
    import rmpe.nms_search

    def bug(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(rmpe.nms_search, "apply_nms", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["nms", PROPOSALS, "-o", str(tmp_path / "o.json")])
    assert _listing(tmp_path) == []
