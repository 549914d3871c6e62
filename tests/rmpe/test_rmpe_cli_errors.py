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

from rmpe.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROPOSALS = str(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz")
GT = str(ROOT / "data" / "gt_dev.json.gz")
COCO4 = ROOT / "data" / "coco4"
DETS = str(COCO4 / "test_coco_det_AP_H_56.json")
GT4 = str(COCO4 / "test_coco.json")


pytestmark = pytest.mark.usefixtures("one_thread")


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
    assert main(["nms", PROPOSALS, "-o", str(out), "--nms", "oks"]) == 0
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
    p = subprocess.run([sys.executable, "-c", _SIGTERM_CHILD, "nms", PROPOSALS, "-o", str(out), "--nms", "oks"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    # was: killed by the signal (-15) with .kept.json.XXXX.tmp left beside the output
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, p.stderr)
    assert p.stderr.strip().splitlines()[-1] == "rmpe nms: terminated", p.stderr
    assert _listing(tmp_path) == []


def test_sigterm_handler_is_restored(tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["nms", PROPOSALS, "-o", str(tmp_path / "k.json"), "--nms", "oks"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------ the reported input cases

def test_params_file_with_a_non_numeric_value(tmp_path, capsys, w):
    # was: a torch cast error ("Expected a value of type 'List[float]'"), traceback, exit 1
    p = w("p.json", {"method": "paper", "params": {"eta": "abc"}})
    fails(capsys, ["nms", PROPOSALS, "-o", str(tmp_path / "o.json"), "--nms-params", p],
          "NMS parameters file", "p.json", "'eta' must be a number, got 'abc'", folder=tmp_path)
    fails(capsys, ["tune-nms", PROPOSALS, GT, "-o", str(tmp_path / "o.json"), "--start", p, "--quiet"],
          "p.json", "'eta' must be a number", folder=tmp_path)
    fails(capsys, ["run", str(COCO4), DETS, "-o", str(tmp_path / "o.json"), "--nms-params", p],
          "p.json", "'eta' must be a number", folder=tmp_path)


def test_16_joint_ground_truth(tmp_path, capsys, w, gt_dev):
    # was: "operands could not be broadcast together with shapes (17,) (16,)", blamed on the results file
    gt16 = w("gt16.json", dict(gt_dev, annotations=[dict(a, keypoints=a["keypoints"][:48])
                                                     for a in gt_dev["annotations"]]))
    match = ("gt16.json", "'keypoints' has 48 numbers", "17 joints")
    fails(capsys, ["nms", PROPOSALS, "-o", str(tmp_path / "o.json"), "--gt", gt16], *match, folder=tmp_path)
    fails(capsys, ["eval", PROPOSALS, gt16], *match)
    fails(capsys, ["tune-nms", PROPOSALS, gt16, "-o", str(tmp_path / "o.json"), "--quiet"], *match, folder=tmp_path)


def test_16_joint_ground_truth_in_run(tmp_path, capsys, w, gt4):
    gt16 = w("gt16.json", dict(gt4, annotations=[dict(a, keypoints=a["keypoints"][:48]) for a in gt4["annotations"]]))
    fails(capsys, ["run", str(COCO4), DETS, "-o", str(tmp_path / "o.json"), "--gt", gt16],
          "gt16.json", "'keypoints' has 48 numbers", "17 joints", folder=tmp_path)


def test_null_score(tmp_path, capsys, w, records):
    # was: "Could not infer dtype of NoneType"
    f = w("a.json", [records[0], dict(records[1], score=None)])
    fails(capsys, ["nms", f, "-o", str(tmp_path / "o.json")], "a.json", "record 1: 'score' must be a number, got None",
          folder=tmp_path)
    fails(capsys, ["tune-nms", f, GT, "-o", str(tmp_path / "o.json"), "--quiet"], "record 1: 'score' must be a number",
          folder=tmp_path)
    # was: "float() argument must be a string or a real number, not 'NoneType'"
    fails(capsys, ["eval", f, GT], "a.json", "result 1: 'score' must be a number, got None")


def test_huge_image_id(tmp_path, capsys, w, records, gt4):
    # was: "Overflow when unpacking long long" (rmpe train)
    big = w("big.json", dict(gt4, images=[dict(i, id=1e30) for i in gt4["images"]],
                             annotations=[dict(a, image_id=1e30) for a in gt4["annotations"]]))
    fails(capsys, ["train", "--data", big, "--images", str(COCO4), "--epochs", "1"], "big.json",
          "images[0]: 'id' must be a 64-bit integer, got 1e+30")
    # was: "value cannot be converted to type int64 without overflow"
    fails(capsys, ["nms", w("p.json", [dict(records[0], image_id=1e30)]), "-o", str(tmp_path / "o.json")],
          "p.json", "record 0: 'image_id' must be a 64-bit integer, got 1e+30")
    fails(capsys, ["nms", w("q.json", "[" + json.dumps(records[0]).replace(
        f'"image_id": {records[0]["image_id"]}', '"image_id": 100000000000000000000000000000') + "]"),
        "-o", str(tmp_path / "o.json")], "record 0: 'image_id' must be a 64-bit integer")
    fails(capsys, ["eval", w("r.json", [dict(records[0], image_id=1e30)]), GT], "r.json",
          "result 0: 'image_id' must be a 64-bit integer, got 1e+30")
    fails(capsys, ["run", str(COCO4), w("d.json", [{"image_id": 1e30, "bbox": [1, 2, 3, 4], "score": 1}]),
                   "-o", str(tmp_path / "o.json")], "d.json", "record 0: 'image_id' must be a 64-bit integer")


# ------------------------------------------------------------------ more bad inputs, found by trying each command

def test_params_file_values(tmp_path, capsys, w):
    out = str(tmp_path / "o.json")
    cases = [
        ({"method": "paper", "params": {"eta": None}}, "'eta' must be a number, got None"),
        ({"method": "paper", "params": {"eta": [1]}}, "'eta' must be a number, got [1]"),
        ({"method": "paper", "params": {"merge": 3}}, "'merge' must be true or false, got 3"),
        ({"method": "soft-oks", "params": {"max_dets": 2.5}}, "'max_dets' must be an integer, got 2.5"),
        ({"method": "oks", "params": {"sigmas": "ab"}}, "'sigmas' must be a list of numbers"),
        ({"method": "oks", "params": {"vis_thresh": "x"}}, "'vis_thresh' must be a number or null"),
        # out of range: was the kernel's RuntimeError, a traceback
        ({"method": "paper", "params": {"sigma1": -1}}, "sigma1 must be > 0 and finite, got -1"),
        ({"method": "alphapose", "params": {"delta2": 0}}, "delta2 must be > 0 and finite, got 0"),
        ({"method": "soft-oks", "params": {"max_dets": -5}}, "max_dets must be >= 0, or -1 for no limit, got -5"),
        ({"method": "soft-oks", "params": {"thresh": 0}}, "thresh must be > 0"),
        ({"method": "oks", "params": {"sigmas": [1, -2]}}, "sigmas must be positive and finite"),
        ({"method": ["paper"], "params": {}}, "method must be one of"),
    ]
    for n, (doc, match) in enumerate(cases):
        p = w(f"p{n}.json", doc)
        fails(capsys, ["nms", PROPOSALS, "-o", out, "--nms-params", p], f"p{n}.json", match, folder=tmp_path)
    p = w("start.json", {"method": "paper", "params": {"sigma1": 0}})
    fails(capsys, ["tune-nms", PROPOSALS, GT, "-o", out, "--start", p, "--quiet"], "start.json",
          "sigma1 must be > 0", folder=tmp_path)
    # sigmas for another joint count than the proposals' (was the kernel's RuntimeError)
    p = w("s.json", {"method": "oks", "params": {"sigmas": [0.05] * 16}})
    fails(capsys, ["nms", PROPOSALS, "-o", out, "--nms-params", p], "16 sigmas", "17 joints", folder=tmp_path)


def test_proposals_field_types(tmp_path, capsys, w, records):
    r = records[0]
    out = str(tmp_path / "o.json")
    cases = [
        (dict(r, image_id=785.5), "record 0: 'image_id' must be a 64-bit integer, got 785.5"),  # was: 785
        (dict(r, image_id="x"), "record 0: 'image_id' must be a 64-bit integer, got 'x'"),
        (dict(r, score="x"), "record 0: 'score' must be a number, got 'x'"),
        (dict(r, det_score=None), "record 0: 'det_score' must be a number, got None"),
        (dict(r, keypoints=None), "record 0: 'keypoints' must be a list of numbers, got None"),
        (dict(r, keypoints="abc"), "record 0: 'keypoints' must be a list of numbers, got 'abc'"),
        (dict(r, keypoints=[None] * 51), "record 0: 'keypoints' must be a list of numbers"),
        (dict(r, keypoints=[]), "record 0: 'keypoints' has 0 numbers"),
        (dict(r, det_bbox=5), "record 0: needs a 4-number xywh box"),
        (dict(r, det_bbox="abcd"), "record 0: needs a 4-number xywh box"),
        (dict(r, det_bbox=list("abcd")), "record 0: 'det_bbox' must be a list of 4 numbers, got ['a', 'b', 'c', 'd']"),
    ]
    for n, (rec, match) in enumerate(cases):
        fails(capsys, ["nms", w(f"p{n}.json", [rec]), "-o", out], f"p{n}.json", match, folder=tmp_path)


def test_ground_truth_structure(tmp_path, capsys, w, gt_dev):
    """What pycocotools indexes or evaluates, checked first (was: KeyError, TypeError, IndexError
    tracebacks, or a pycocotools message blamed on the results file)."""
    anns = gt_dev["annotations"]
    cases = [
        (dict(gt_dev, images=[{"file_name": "x.jpg"}]), "images[0] has no 'id'"),
        (dict(gt_dev, images=[1, 2]), "images[0] is an int, not an object"),
        (dict(gt_dev, annotations=["x"]), "annotations[0] is a str, not an object"),
        (dict(gt_dev, annotations=[{k: v for k, v in a.items() if k != "category_id"} for a in anns]),
         "annotations[0] has no 'category_id'"),
        (dict(gt_dev, categories=[1]), "categories[0] is an int, not an object"),
        (dict(gt_dev, annotations=[dict(a, keypoints=None) for a in anns]),
         "annotations[0]: 'keypoints' must be a list of finite numbers, got None"),
        (dict(gt_dev, annotations=[dict(a, keypoints="abc") for a in anns]), "'keypoints' must be a list of finite"),
        (dict(gt_dev, annotations=[dict(a, bbox=None) for a in anns]),
         "annotations[0]: 'bbox' must be a list of 4 finite numbers, got None"),
        (dict(gt_dev, annotations=[dict(a, area="x") for a in anns]),
         "annotations[0]: 'area' must be a finite number, got 'x'"),
        (dict(gt_dev, annotations=[dict(a, iscrowd="x") for a in anns]), "annotations[0]: 'iscrowd' must be 0 or 1"),
        (dict(gt_dev, annotations=[dict(a, image_id="x") for a in anns]),
         "annotations[0]: 'image_id' must be a 64-bit integer, got 'x'"),
        (dict(gt_dev, annotations=[dict(a, num_keypoints=None) for a in anns]),
         "'num_keypoints' must be a finite number"),
    ]
    for n, (doc, match) in enumerate(cases):
        g = w(f"g{n}.json", doc)
        fails(capsys, ["eval", PROPOSALS, g], f"g{n}.json", match)
    g = w("g.json", dict(gt_dev, images=[1]))
    fails(capsys, ["nms", PROPOSALS, "-o", str(tmp_path / "o.json"), "--gt", g], "g.json", "images[0]",
          folder=tmp_path)


def test_results_field_types(tmp_path, capsys, w, records):
    r = records[0]
    cases = [
        (dict(r, image_id=785.5), "result 0: 'image_id' must be a 64-bit integer, got 785.5"),  # was: scored as 785
        (dict(r, category_id="x"), "result 0: 'category_id' must be a 64-bit integer, got 'x'"),
        (dict(r, keypoints=None), "result 0: 'keypoints' must be a list of numbers, got None"),
        (dict(r, keypoints="abc"), "result 0: 'keypoints' must be a list of numbers, got 'abc'"),
    ]
    for n, (rec, match) in enumerate(cases):
        fails(capsys, ["eval", w(f"r{n}.json", [rec]), GT], f"r{n}.json", match)


def test_run_inputs(tmp_path, capsys, w, gt4):
    out = str(tmp_path / "o.json")
    run = ["run", str(COCO4)]
    det = {"image_id": 785, "bbox": [1, 2, 30, 40], "score": 0.9}
    # an image id that is not an integer was read as 785
    fails(capsys, run + [w("d1.json", [dict(det, image_id=785.5)]), "-o", out], "d1.json",
          "record 0: 'image_id' must be a 64-bit integer or a file name, got 785.5", folder=tmp_path)
    # --images-json holding a list (was: TypeError traceback), an id that is not a number
    fails(capsys, run + [DETS, "-o", out, "--images-json", w("ij.json", [])], "ij.json", "'images' list",
          folder=tmp_path)
    ij2 = w("ij2.json", dict(gt4, images=[dict(i, id="x") for i in gt4["images"]]))
    fails(capsys, run + [DETS, "-o", out, "--images-json", ij2], "ij2.json",
          "images[0]: 'id' must be a 64-bit integer, got 'x'", folder=tmp_path)


def test_train_inputs(tmp_path, capsys, w, gt4):
    base = ["train", "--images", str(COCO4), "--epochs", "1"]
    anns = gt4["annotations"]
    cases = [
        (dict(gt4, annotations=["x"]), "annotations[0] is a str, not an object"),  # was: AttributeError
        (dict(gt4, annotations=[dict(a, bbox=None) for a in anns]),
         "'bbox' must be a list of 4 finite numbers, got None"),
        (dict(gt4, annotations=[dict(a, bbox="abcd") for a in anns]), "'bbox' must be a list of 4 finite numbers"),
        (dict(gt4, annotations=[dict(a, keypoints=["x"] * 51) for a in anns]), "'keypoints' must be a list of finite"),
        (dict(gt4, images=[dict(i, file_name=None) for i in gt4["images"]]), "images[0]: 'file_name' must be a string"),
        (dict(gt4, images=[dict(i, id="x") for i in gt4["images"]]), "images[0]: 'id' must be a 64-bit integer"),
    ]
    for n, (doc, match) in enumerate(cases):
        fails(capsys, base + ["--data", w(f"t{n}.json", doc)], f"t{n}.json", match)


def test_fit_pgpg_inputs(tmp_path, capsys, w):
    out = str(tmp_path / "m.npz")
    base = ["-o", out, "-q", "--atoms", "2", "--min-atom-samples", "1"]
    det = {"image_id": 785, "bbox": [1, 2, 3, 4], "score": 1}
    # was: TypeError traceback
    fails(capsys, ["fit-pgpg", GT4, w("d1.json", [dict(det, score=None)])] + base,
          "detection #0: 'score' must be a number, got None", folder=tmp_path)
    # was: "could not convert string to float: 'abcd'", naming neither detection nor field
    fails(capsys, ["fit-pgpg", GT4, w("d2.json", [dict(det, bbox="abcd")])] + base,
          "detection #0: 'bbox' must be 4 finite numbers", folder=tmp_path)


# ------------------------------------------------------------------ NaN and absurd flags

def test_run_flags(tmp_path, capsys):
    out = str(tmp_path / "o.json")
    run = ["run", str(COCO4)]
    # were: a kernel RuntimeError, a silently empty result, an allocation failure, a segmentation fault
    fails(capsys, run + [DETS, "-o", out, "--mean", "nan", "0", "0"], "--mean must be finite", folder=tmp_path)
    fails(capsys, run + [DETS, "-o", out, "--std", "1", "inf", "1"], "--std must be finite", folder=tmp_path)
    fails(capsys, run + [DETS, "-o", out, "--det-thresh", "nan"], "--det-thresh must be a number", folder=tmp_path)
    fails(capsys, run + [DETS, "-o", out, "--input-size", "100000", "100000"], "--input-size", "at most",
          folder=tmp_path)
    fails(capsys, run + [DETS, "-o", out, "--threads", "100000000"], "--threads", "at most", folder=tmp_path)


def test_run_media_flags(tmp_path, capsys):
    """The flags of sources, outputs, tracking and detectors: one line, exit 2, nothing written."""
    out = str(tmp_path / "o.json")
    run = ["run", str(COCO4)]
    cases = [
        (run + [DETS, "-o", out, "--fps", "0"], ("--fps must be a positive number",)),
        (run + [DETS, "-o", out, "--fps", "nan"], ("--fps must be a positive number",)),
        (run + [DETS, "--save-video", str(tmp_path / "v.gif")], ("--save-video", "extension must be one of")),
        (run + [DETS, "-o", out, "--track-min-similarity", "2"], ("--track-min-similarity must be in [0, 1]",)),
        (run + [DETS, "-o", out, "--track-min-similarity", "nan"], ("--track-min-similarity must be in [0, 1]",)),
        (run + [DETS, "-o", out, "--track-max-age", "-1"], ("--track-max-age must be at least 0",)),
        (run + [DETS, "-o", out, "--queue-size", "0"], ("--queue-size must be at least 1",)),
        (run + [DETS, "-o", out, "--max-frames", "0"], ("--max-frames must be at least 1",)),
        (run + [DETS, "-o", out, "--input-size", "128", "96"], ("--input-size applies to TorchScript",)),
        (run + [DETS, "-o", out, "--model", "blazepose-torch", "--sigmoid"], ("--sigmoid applies to TorchScript",)),
        (run + [DETS, "-o", out, "--draw-kp-thresh", "nan"], ("--draw-kp-thresh must be a number",)),
        (run + [DETS, "-o", out, "--detector", DETS], ("either as DETECTIONS.json or as --detector",)),
        (run + ["-o", out, "--detector", "frcnn"], ("detector must be one of",)),
        (run + ["-o", out, "--detector", "torchvision:not_a_model"], ("torchvision architecture must be one of",)),
        (run + [DETS, "-o", out, "--nms", "soft-oks", "--nms-score", "joints"], ("--nms-score must be 'rank'",)),
        (["run", str(tmp_path / "missing.mp4"), DETS, "-o", out], ("missing.mp4", "does not exist")),
        (["run", str(tmp_path), DETS, "-o", out], ("holds no images",)),
        (["nms", PROPOSALS, "-o", out, "--method", "oks"], ("--method is now --nms",)),
        (["nms", PROPOSALS, "-o", out, "--params", "tuned"], ("--params is now --nms-params",)),
        (["tune-nms", PROPOSALS, GT, "-o", out, "--rank", "box"], ("--rank is now --nms-rank",)),
        (["eval", PROPOSALS], ("give the ground truth once",)),
        (["eval", PROPOSALS, GT, "--gt", GT], ("give the ground truth once",)),
    ]
    for argv, match in cases:
        fails(capsys, argv, *match, folder=tmp_path)
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"not a video")
    fails(capsys, ["run", str(fake), DETS, "-o", out], "could not be opened", folder=tmp_path)
    import cv2
    import numpy as np

    clip = tmp_path / "real.avi"
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        vw.write(np.zeros((48, 64, 3), np.uint8))
    vw.release()
    fails(capsys, ["run", str(clip), DETS, "-o", out, "--gt", GT], "--gt scores images named by COCO ids",
          folder=tmp_path)


def test_train_flags(capsys):
    base = ["train", "--images", str(COCO4), "--epochs", "1"]
    # were: training on with NaN losses, numpy's "expected non-negative integer", an allocation failure, a
    # segmentation fault
    fails(capsys, base + ["--data", GT4, "--lr", "inf"], "--lr must be finite")
    fails(capsys, base + ["--data", GT4, "--sigma", "inf"], "--sigma must be finite")
    fails(capsys, base + ["--data", GT4, "--seed", "-1"], "--seed must be >= 0")
    fails(capsys, base + ["--data", GT4, "--input-size", "40000", "40000"], "--input-size", "at most")
    fails(capsys, base + ["--data", GT4, "--threads", "100000000"], "--threads", "at most")


def test_fit_pgpg_flags(tmp_path, capsys):
    base = ["-o", str(tmp_path / "m.npz"), "-q", "--atoms", "2", "--min-atom-samples", "1"]
    # was: sklearn's "The 'random_state' parameter of KMeans must be an int ..."
    fails(capsys, ["fit-pgpg", GT4, DETS, "--seed", "-1"] + base, "--seed must be >= 0", folder=tmp_path)
    # more folds than images (was: sklearn's "Found array with 1 sample(s) ...")
    fails(capsys, ["fit-pgpg", GT4, DETS, "--cv", "10"] + base, "--cv 10", "4 images", folder=tmp_path)


def test_tune_nms_absurd_grid(tmp_path, capsys):
    # was: runs for hours (a million grid points per parameter)
    fails(capsys, ["tune-nms", PROPOSALS, GT, "-o", str(tmp_path / "o.json"), "--grid", "1000001"],
          "--grid", "at most", folder=tmp_path)


def test_bench_threads(capsys):
    fails(capsys, ["bench", "--threads", "100000000"], "--threads", "at most")


# ------------------------------------------------------------------ bugs stay visible

def test_unknown_errors_still_show_a_traceback(tmp_path, monkeypatch):
    """Bugs stay visible: an exception that is not an input error propagates (exit 1 with a traceback)."""
    import rmpe.nms.runtime

    def bug(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(rmpe.nms.runtime, "apply_nms", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["nms", PROPOSALS, "-o", str(tmp_path / "o.json")])
    assert _listing(tmp_path) == []


def test_bench_says_it_needs_a_source_checkout(capsys, tmp_path):
    """From an installed wheel `rmpe bench` found no benchmarks and said only that; the benchmarks are
    not in the wheel, and --help and the error now say so."""
    fails(capsys, ["bench", "--benchmarks-dir", str(tmp_path)], "not part of an installed wheel",
          "--benchmarks-dir CHECKOUT/benchmarks")
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "not in an installed wheel" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")
