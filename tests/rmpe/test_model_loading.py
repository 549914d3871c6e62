"""rmpe.pipeline.models.load_pose_model: every kind of model file by its contents (rmpe train checkpoints, AlphaPose
FastPose checkpoints, TorchScript / torch.export files, .tflite), train -> run on the shipped images, the models
shipped as package data, clear one-line errors."""
import json
import pathlib

import numpy as np
import pytest
import torch

from rmpe.pipeline.models import (BlazePoseModel, FastPoseModel, SSTNModel, TorchHeatmapModel, check_model,
                                  default_blazepose_path, load_pose_model, shipped_model_dir)

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny `rmpe train` run on the shipped images (1 epoch): its last.pt."""
    from rmpe import cli

    out = tmp_path_factory.mktemp("ckpt")
    args = ["train", "--data", str(COCO4 / "test_coco.json"), "--images", str(COCO4), "--epochs", "1",
            "--warmup-epochs", "0", "--width", "8", "--depth", "1", "--boxes-per-person", "2", "--threads", "1",
            "--no-progress", "--out", str(out), "--seed", "0"]
    assert cli.main(args) == 0
    return out / "last.pt"


def test_models_are_package_data():
    """The BlazePose landmark model and its detector ship inside the rmpe package (setup.py's package_data), so
    an installed wheel finds them without the source tree."""
    import rmpe.pipeline

    folder = shipped_model_dir()
    assert folder == pathlib.Path(rmpe.pipeline.__file__).resolve().parents[1] / "data" / "models" / "blazepose"
    for name in ("pose_landmark_full.tflite", "pose_detection.tflite", "LICENSE"):
        assert (folder / name).is_file(), name
    assert "Apache License" in (folder / "LICENSE").read_text()
    setup = (ROOT / "setup.py").read_text()
    assert '"data/models/blazepose/*.tflite"' in setup and '"data/models/blazepose/LICENSE"' in setup


def test_train_then_run(checkpoint, coco4):
    """`rmpe train` -> load_pose_model(last.pt) -> the pipeline on the shipped images. The pipeline's decoded
    joints equal those of the trained SSTN run directly on the trainer's own crops of the same boxes
    (rmpe.sstn.datasets' crop, heatmap frame and rmpe_ext's decode), so the adapter's preprocessing and its
    heatmap -> image map are the trainer's."""
    from rmpe_ext.ops import affine_crop, boxes_to_theta, heatmap_decode

    from rmpe.pipeline import Pipeline
    from rmpe.sstn.datasets import MEAN, STD, heatmap_to_image_theta

    model = load_pose_model(checkpoint)
    assert isinstance(model, SSTNModel) and model.stn and model.input_size == (64, 48)
    check_model(model)
    frames, boxes, ids = coco4
    res = Pipeline(model, nms="oks", interpolation="bilinear")(frames, boxes, ids)
    assert res.num_proposals == 118 and res.results
    assert all(np.isfinite(r["keypoints"]).all() for r in res.results)
    # the same persons through the trainer's conventions
    sstn = model.module.sstn
    got, want = res.proposals.poses, []
    for f, fb in zip(frames, boxes):
        theta = boxes_to_theta(fb.boxes.to(torch.float64), (64, 48), 1.25, True)
        crops = affine_crop(torch.from_numpy(f), theta.to(torch.float32), (64, 48),
                            torch.zeros(len(fb), dtype=torch.long), mean=MEAN, std=STD, reverse_channels=True)
        with torch.no_grad():
            hm = sstn(crops).heatmaps[-1]
        pts, _ = heatmap_decode(hm.contiguous(), heatmap_to_image_theta(theta, (64, 48), hm.shape[2:]), "quarter")
        want.append(pts)
    torch.testing.assert_close(got, torch.cat(want).to(got.dtype), rtol=0, atol=2e-3)
    # the SPPE alone (no STN) is another network on the same crops
    alone = load_pose_model(checkpoint, stn=False)
    assert not alone.stn
    res2 = Pipeline(alone, nms="oks", interpolation="bilinear")(frames, boxes, ids)
    assert res2.num_proposals == 118 and not torch.equal(res2.proposals.poses, got)


def test_train_checkpoint_errors(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=False)
    state["config"]["extra"]["width"] = 16
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    with pytest.raises(ValueError, match="wrong.pt.*do not fit"):
        load_pose_model(wrong)
    del state["config"]["extra"]["stacks"]
    torch.save(state, wrong)
    with pytest.raises(ValueError, match="wrong.pt.*architecture"):
        load_pose_model(wrong)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_pose_model(truncated)


def test_fastpose_checkpoint(tmp_path):
    """An AlphaPose FastPose checkpoint (here a DataParallel-style wrapped one) is recognised by its keys."""
    from rmpe.pipeline.models import FastPose

    net = FastPose(17).eval()
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    path = tmp_path / "fast_res50_256x192.pth"
    torch.save({"state_dict": sd}, path)
    model = load_pose_model(path)
    assert isinstance(model, FastPoseModel) and model.num_joints == 17 and model.input_size == (256, 192)
    x = torch.rand(2, 3, 256, 192)
    torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)


def test_torchscript_and_export_files(tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 4).repeat(1, 6, 1, 1)[:, :17]

    net = Net()
    ts = tmp_path / "sppe.bin"  # any name: recognised by its contents
    torch.jit.save(torch.jit.script(net), str(ts))
    m = load_pose_model(ts, input_size=(64, 48))
    assert isinstance(m, TorchHeatmapModel) and m.input_size == (64, 48)
    x = torch.rand(2, 3, 64, 48)
    torch.testing.assert_close(m(x), net(x))
    ep = tmp_path / "sppe.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(ep))
    torch.testing.assert_close(load_pose_model(ep, input_size=(64, 48))(x), net(x))


def test_named_and_tflite_models():
    pytest.importorskip("ai_edge_litert")
    m = load_pose_model("blazepose", num_threads=1)
    assert isinstance(m, BlazePoseModel) and m.model_path == default_blazepose_path()
    m2 = load_pose_model(str(shipped_model_dir() / "pose_landmark_full.tflite"))
    assert isinstance(m2, BlazePoseModel)
    pytest.importorskip("tflite")
    from rmpe.pipeline.models import BlazePoseTorchModel

    assert isinstance(load_pose_model("blazepose-torch"), BlazePoseTorchModel)


def test_unknown_files_give_one_line(tmp_path):
    cases = []
    j = tmp_path / "boxes.json"
    j.write_text(json.dumps([1, 2]))
    cases.append((j, "not a torch file"))
    d = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3), "step": 4}, d)
    cases.append((d, "not a model rmpe can load \\(a dict with keys 'weights', 'step'\\)"))
    t = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), t)
    cases.append((t, "not a model rmpe can load \\(a Tensor\\)"))
    obj = tmp_path / "object.pt"
    torch.save({"x": pathlib.PurePosixPath("a")}, obj)
    cases.append((obj, "objects other than tensors.*weights_only"))
    for path, match in cases:
        with pytest.raises(ValueError, match=match) as e:
            load_pose_model(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pose_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is not a file"):
        load_pose_model(tmp_path)
    with pytest.raises(ValueError, match="model must be one of"):
        load_pose_model("")


def test_rmpe_run_with_a_train_checkpoint(checkpoint, tmp_path, capsys):
    """`rmpe train` -> `rmpe run --model last.pt` (the command line): poses written; a file that is no model is
    one line on stderr, exit 2, nothing written."""
    from rmpe import cli

    out = tmp_path / "res.json"
    dets = COCO4 / "test_coco_det_AP_H_56.json"
    assert cli.main(["run", str(COCO4), str(dets), "--model", str(checkpoint), "-o", str(out), "--threads", "1",
                     "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res and {r["image_id"] for r in res} <= {785, 40083, 196141, 197388}
    assert all(len(r["keypoints"]) == 51 and np.isfinite(r["keypoints"]).all() for r in res)
    capsys.readouterr()
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    out2 = tmp_path / "res2.json"
    assert cli.main(["run", str(COCO4), str(dets), "--model", str(junk), "-o", str(out2), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.pt" in err[0] and "not a model rmpe can load" in err[0]
    assert not out2.exists()
