"""Counts the crop values where rmpe_ext.alphapose.crop_persons differs from AlphaPose's own crops.

AlphaPose's crop (SimpleTransform.test_transform) is cv2.warpAffine(INTER_LINEAR) of the RGB frame
with get_affine_transform's matrix for the box (fixed to 256x192's aspect ratio, x1.25). This script
builds those matrices with AlphaPose's own functions, warps with OpenCV, crops the same boxes with
crop_persons, and compares the uint8 values of the crops (crop_persons' normalized floats mapped back:
round((x + mean) * 255)).

Data: the 4 COCO images and 118 real AP_H_56 boxes of data/coco4 (= mmpose tests/data/coco), 118 crops
of 256 x 192 x 3 = 17,399,808 values.

    python tools/crop_parity.py                                  # the installed OpenCV (the venv's)
    python tools/crop_parity.py --opencv-python /tmp/cv4/bin/python

Each --opencv-python (repeatable) also warps in that interpreter, with its OpenCV, and compares with
crop_persons(..., opencv=<its major version>). Such an interpreter needs only numpy and OpenCV:
    python -m venv /tmp/cv4 && /tmp/cv4/bin/pip install numpy "opencv-python-headless<5"
Needs alphapose==1.1 (pip install --no-deps) for the matrices.
"""
import argparse
import json
import pathlib
import subprocess
import tempfile

import cv2
import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
INPUT = (256, 192)  # h, w

# Run by the OpenCV 4 interpreter: warps the saved frames with the saved matrices.
WARP = r"""
import sys, cv2, numpy as np
z = np.load(sys.argv[1], allow_pickle=True)  # frames of different sizes: an object array
out = np.stack([cv2.warpAffine(z["frames"][f], M, (int(z["w"]), int(z["h"])), flags=cv2.INTER_LINEAR)
                for f, M in zip(z["frame_of"], z["mats"])])
np.savez(sys.argv[2], crops=out, version=cv2.__version__)
"""


def load(folder):
    """RGB frames [H, W, 3] uint8, and per frame its boxes [n, 4] xyxy float32 (the detector file's order)."""
    dets = json.loads((folder / "test_coco_det_AP_H_56.json").read_text())
    frames, boxes = [], []
    for image_id in sorted({d["image_id"] for d in dets}):
        bgr = cv2.imread(str(folder / f"{image_id:012d}.jpg"))
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        boxes.append(torch.tensor([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2],
                                    d["bbox"][1] + d["bbox"][3]] for d in dets if d["image_id"] == image_id],
                                  dtype=torch.float32))
    return frames, boxes


def alphapose_matrices(boxes):
    """get_affine_transform's matrix for each box, computed as test_transform computes it."""
    from alphapose.utils.bbox import _box_to_center_scale
    from alphapose.utils.transforms import get_affine_transform

    mats = []
    for xmin, ymin, xmax, ymax in boxes:  # float32 tensor elements, as the detector hands them over
        center, scale = _box_to_center_scale(xmin, ymin, xmax - xmin, ymax - ymin, INPUT[1] / INPUT[0])
        mats.append(get_affine_transform(center, scale * 1.0, 0, [INPUT[1], INPUT[0]]))
    return mats


def ours(frames, boxes, opencv):
    """crop_persons' crops as uint8 [N, h, w, 3] RGB."""
    from rmpe_ext.alphapose import ALPHAPOSE_MEAN, crop_persons

    mean = torch.tensor(ALPHAPOSE_MEAN).view(1, 3, 1, 1)
    out = []
    for frame, b in zip(frames, boxes):
        inps, _ = crop_persons(torch.from_numpy(frame), b, INPUT, opencv=opencv)
        u8 = torch.round((inps.double() + mean) * 255)
        assert u8.min() >= 0 and u8.max() <= 255
        out.append(u8.to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out).numpy()


def report(name, theirs, mine):
    d = np.abs(theirs.astype(np.int16) - mine.astype(np.int16))
    print(f"{name}: {int((d > 0).sum())} of {d.size:,} values differ ({(d > 0).mean():.1e}), "
          f"largest difference {int(d.max())} uint8 step(s), in {int((d > 0).any(axis=(1, 2, 3)).sum())} of "
          f"{len(d)} crops")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=pathlib.Path, default=ROOT / "data" / "coco4",
                    help="folder with the JPEGs and test_coco_det_AP_H_56.json (default: data/coco4)")
    ap.add_argument("--opencv-python", action="append", default=[],
                    help="an interpreter with numpy and another OpenCV (e.g. opencv-python-headless<5); repeatable")
    args = ap.parse_args()

    frames, boxes = load(args.data)
    mats = alphapose_matrices(torch.cat(boxes))
    frame_of = np.concatenate([np.full(len(b), f) for f, b in enumerate(boxes)])
    print(f"{len(frames)} images, {len(mats)} boxes from {args.data}; crops {INPUT[0]}x{INPUT[1]}")

    major = int(cv2.__version__.split(".")[0])
    theirs = np.stack([cv2.warpAffine(frames[f], M, (INPUT[1], INPUT[0]), flags=cv2.INTER_LINEAR)
                       for f, M in zip(frame_of, mats)])
    report(f"installed OpenCV {cv2.__version__} vs crop_persons(opencv={major})", theirs, ours(frames, boxes, major))

    for python in args.opencv_python:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = pathlib.Path(tmp) / "in.npz", pathlib.Path(tmp) / "out.npz"
            h, w = INPUT
            frames_obj = np.empty(len(frames), dtype=object)
            frames_obj[:] = frames
            np.savez(src, frames=frames_obj, frame_of=frame_of, mats=np.array(mats), h=h, w=w)
            subprocess.run([python, "-c", WARP, str(src), str(dst)], check=True)
            z = np.load(dst)
            version = str(z["version"])
        other = int(version.split(".")[0])
        report(f"OpenCV {version} ({python}) vs crop_persons(opencv={other})", z["crops"], ours(frames, boxes, other))


if __name__ == "__main__":
    main()
