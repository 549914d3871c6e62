"""Training data for the SSTN + SPPE: real COCO persons cropped from displaced boxes, with heatmap targets.

    persons = load_persons("person_keypoints_val2017_cocomini.json", "val2017/", min_keypoints=5)
    frames = load_frames(persons)                                   # decoded once, uint8 HWC (BGR)
    crops = make_crops(persons, frames, JitterAugmenter(), boxes_per_person=8, rng=np.random.default_rng(0))
    crops.images [N, 3, 64, 48], crops.target [N, 17, 16, 12], crops.theta_star [N, 2, 3], ...

Frames. A **proposal** is a box (x1, y1, x2, y2, image pixels) given by an augmenter (or a detector).
Its crop is taken as AlphaPose does (``rmpe_ext.ops.boxes_to_theta``): the box enlarged ``box_scale``
times about its centre, its shorter side first extended to the input's aspect ratio
(``keep_aspect``), mapped isotropically onto ``input_size = (H, W)``. ``proposal_theta_px [N, 2, 3]``
(float64) maps proposal-crop pixels to image pixels. The images are RGB, /255, minus the ImageNet mean,
over its std (``MEAN``, ``STD``); outside the image they are 0 before normalization.

Targets. Heatmaps live in the normalized frame of their crop (torch's ``align_corners=False``: heatmap
pixel u of hw at x_n = (2 u + 1) / hw - 1), so a joint at normalized (x_n, y_n) peaks at heatmap pixel
``u = ((x_n + 1) hw - 1) / 2``. Each labelled joint (v > 0) inside the frame gives an unnormalized
Gaussian (peak 1, ``sigma`` heatmap pixels) and weight 1; other joints a zero map and weight 0.

* ``target``/``weight``: the GT joints in the **proposal's** frame (what the SDTN's output is compared to).
* ``centred_target``/``centred_weight``: the GT joints in the frame of the **GT box's own crop** (the
  GT box through the same ``box_scale``/``keep_aspect``, at ``crop_size``): the parallel SPPE's
  centre-located targets.
* ``theta_star [N, 2, 3]``: the normalized map from that GT-box crop to the proposal, i.e. the theta an
  ideal STN would predict; ``theta_star[:, :, 2]`` is the GT box centre in normalized proposal
  coordinates (see :func:`rmpe.sstn.model.centre_displacement`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from rmpe_ext.ops import affine_crop, boxes_to_theta, pixel_to_normalized_theta

__all__ = ["MEAN", "STD", "Person", "CropSet", "load_persons", "load_frames", "make_crops", "crops_from_boxes",
           "gaussian_heatmaps", "heatmap_size_for", "detector_boxes", "heatmap_to_image_theta", "split_by_image",
           "flip_crops", "ResampledCrops", "FLIP_PAIRS"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_JOINTS = 17
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))  # COCO left/right joints


@dataclass(frozen=True)
class Person:
    """One annotated COCO person: ``keypoints [17, 3]`` float64 (x, y, v) image px, ``bbox`` (x, y, w, h)."""
    image_path: str
    image_id: int
    ann_id: int
    keypoints: np.ndarray
    bbox: tuple


def load_persons(coco_json, images_dir, min_keypoints: int = 1, image_ids: Optional[Sequence[int]] = None,
                 min_box_side: float = 8.0) -> List[Person]:
    """The non-crowd persons of a COCO keypoint file with at least ``min_keypoints`` labelled joints and
    a box whose sides are at least ``min_box_side`` px, from images present in ``images_dir``
    (``image_ids`` narrows them), in file order. Missing fields raise naming the annotation."""
    from ..coco import check_coco
    from ..io import read_json

    gt = read_json(coco_json, "COCO keypoint file")
    if not isinstance(gt, dict) or "images" not in gt or "annotations" not in gt:
        raise ValueError(f"{os.fspath(coco_json)!r} is not a COCO annotation file (needs 'images' and 'annotations')")
    check_coco(gt, f"COCO keypoint file {os.fspath(coco_json)!r}")  # objects, 64-bit ids, numbers where numbers go
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images folder {os.fspath(images_dir)!r} does not exist")
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    files = {}
    for im in gt["images"]:
        if "id" not in im or "file_name" not in im:
            raise ValueError(f"{os.fspath(coco_json)!r}: an image entry lacks 'id' or 'file_name'")
        files[int(im["id"])] = os.path.join(images_dir, im["file_name"])
    persons = []
    for n, a in enumerate(gt["annotations"]):
        for field in ("image_id", "bbox", "keypoints"):
            if field not in a:
                raise ValueError(f"{os.fspath(coco_json)!r}: annotation {a.get('id', n)} lacks {field!r}")
        if a.get("iscrowd", 0) or a.get("category_id", 1) != 1:
            continue
        iid = int(a["image_id"])
        if (wanted is not None and iid not in wanted) or iid not in files or not os.path.isfile(files[iid]):
            continue
        kp = np.asarray(a["keypoints"], dtype=np.float64)
        if kp.size != 3 * NUM_JOINTS:
            raise ValueError(f"{os.fspath(coco_json)!r}: annotation {a.get('id', n)} has {kp.size} keypoint numbers, "
                             f"expected {3 * NUM_JOINTS}")
        kp = kp.reshape(NUM_JOINTS, 3)
        box = tuple(float(v) for v in a["bbox"])
        if len(box) != 4 or not np.isfinite(box).all():
            raise ValueError(f"{os.fspath(coco_json)!r}: annotation {a.get('id', n)} has a bad bbox {a['bbox']!r}")
        if int((kp[:, 2] > 0).sum()) < min_keypoints or min(box[2], box[3]) < min_box_side:
            continue
        persons.append(Person(files[iid], iid, int(a.get("id", n)), kp, box))
    return persons


def split_by_image(persons: Sequence[Person], held_out_fraction: float = 0.2, seed: int = 0,
                   held_out_images: Optional[Sequence[str]] = None):
    """``(train, held_out)`` persons, split by image (no image on both sides): the images of
    ``held_out_images`` (paths), or a seeded random ``held_out_fraction`` of the images."""
    paths = sorted({p.image_path for p in persons})
    if held_out_images is not None:
        held = {os.fspath(p) for p in held_out_images}
    else:
        if not 0 <= held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
        rng = np.random.default_rng(seed)
        k = int(round(held_out_fraction * len(paths)))
        held = set(rng.choice(paths, size=k, replace=False).tolist()) if k else set()
    return [p for p in persons if p.image_path not in held], [p for p in persons if p.image_path in held]


def load_frames(persons: Sequence[Person]) -> Dict[str, Tensor]:
    """Every image of ``persons``, decoded once: path -> uint8 ``[H, W, 3]`` tensor (BGR, as OpenCV reads)."""
    import cv2

    frames = {}
    for p in persons:
        if p.image_path not in frames:
            img = cv2.imread(p.image_path, cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"could not read image {p.image_path!r}")
            frames[p.image_path] = torch.from_numpy(np.ascontiguousarray(img))
    return frames


def heatmap_size_for(input_size: Sequence[int], stride: int = 4):
    """The heatmap size of a network that downsamples ``stride`` times (the hourglass: 4). The input
    size must be a multiple of the stride, so that crop and heatmap share their normalized frame."""
    h, w = (int(s) for s in input_size)
    if h % stride or w % stride or h < stride or w < stride:
        raise ValueError(f"input size (h, w) must be positive multiples of {stride}, got {(h, w)}")
    return h // stride, w // stride


def gaussian_heatmaps(points: Tensor, size: Sequence[int], sigma: float) -> Tensor:
    """``points [N, K, 2]`` (heatmap pixels x, y; NaN for none) -> ``[N, K, hh, hw]`` float32 maps
    ``exp(-d^2 / (2 sigma^2))`` (zero for NaN points)."""
    hh, hw = (int(s) for s in size)
    if points.dim() != 3 or points.shape[2] != 2:
        raise ValueError(f"points must have shape [N, K, 2], got {tuple(points.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    p = points.to(torch.float64)
    xs = torch.arange(hw, dtype=torch.float64)
    ys = torch.arange(hh, dtype=torch.float64)
    gx = torch.exp(-(xs - p[..., 0:1]) ** 2 / (2 * sigma ** 2))  # [N, K, hw]
    gy = torch.exp(-(ys - p[..., 1:2]) ** 2 / (2 * sigma ** 2))  # [N, K, hh]
    maps = gy[..., :, None] * gx[..., None, :]
    return torch.nan_to_num(maps, nan=0.0).to(torch.float32)


def _invert(m: np.ndarray) -> np.ndarray:
    """[N, 2, 3] affine maps -> their inverses."""
    a = m[:, :, :2]
    ai = np.linalg.inv(a)
    return np.concatenate([ai, -ai @ m[:, :, 2:]], 2)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a o b (b first) for [N, 2, 3] maps."""
    return np.concatenate([a[:, :, :2] @ b[:, :, :2], a[:, :, :2] @ b[:, :, 2:] + a[:, :, 2:]], 2)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """[N, 2, 3] maps applied to [N, K, 2] points."""
    return pts @ m[:, :, :2].transpose(0, 2, 1) + m[:, None, :, 2]


def _to_normalized(px: np.ndarray, size) -> np.ndarray:
    h, w = size
    return np.stack([(2 * px[..., 0] + 1) / w - 1, (2 * px[..., 1] + 1) / h - 1], -1)


def _normalized_targets(kp: np.ndarray, img_to_crop_px: np.ndarray, crop_size, heatmap_size, sigma: float):
    """Targets for keypoints [N, K, 3] (image px) in the crop frame given by img_to_crop_px [N, 2, 3]."""
    n = _to_normalized(_apply(img_to_crop_px, kp[..., :2]), crop_size)
    hh, hw = heatmap_size
    hm = np.stack([((n[..., 0] + 1) * hw - 1) / 2, ((n[..., 1] + 1) * hh - 1) / 2], -1)
    ok = (kp[..., 2] > 0) & (np.abs(n) <= 1).all(-1)
    hm = np.where(ok[..., None], hm, np.nan)
    return gaussian_heatmaps(torch.from_numpy(hm), heatmap_size, sigma), torch.from_numpy(ok.astype(np.float32))


@dataclass
class CropSet:
    """Cached network inputs and targets for N proposals (all tensors share their first dimension).

    images [N, 3, H, W] float32 (normalized); target, centred_target [N, K, hh, hw] float32;
    weight, centred_weight [N, K] float32; theta_star [N, 2, 3] float32 (normalized, GT-box crop ->
    proposal); proposal_theta_px [N, 2, 3] float64 (proposal-crop px -> image px); boxes [N, 4] float64
    (the proposals, xyxy); keypoints [N, K, 3] float64 (GT, image px); gt_boxes [N, 4] float64 (xywh);
    person [N] int64 (index into the persons list); image_id [N] int64."""
    images: Tensor
    target: Tensor
    weight: Tensor
    centred_target: Tensor
    centred_weight: Tensor
    theta_star: Tensor
    proposal_theta_px: Tensor
    boxes: Tensor
    keypoints: Tensor
    gt_boxes: Tensor
    person: Tensor
    image_id: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index) -> "CropSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return CropSet(*(getattr(self, f.name)[index] for f in fields(self)))

    @staticmethod
    def concat(sets: Sequence["CropSet"]) -> "CropSet":
        if not sets:
            raise ValueError("concat needs at least one CropSet")
        return CropSet(*(torch.cat([getattr(s, f.name) for s in sets]) for f in fields(CropSet)))


def crops_from_boxes(persons: Sequence[Person], frames: Dict[str, Tensor], boxes, person_index,
                     input_size: Sequence[int] = (64, 48), crop_size: Optional[Sequence[int]] = None,
                     heatmap_size: Optional[Sequence[int]] = None, sigma: float = 1.0, box_scale: float = 1.25,
                     keep_aspect: bool = True) -> CropSet:
    """Crops and targets for proposals ``boxes [N, 4]`` (xyxy image px) of persons ``person_index [N]``
    (indices into ``persons``). ``crop_size`` (the STN crop; default ``input_size``) sets the centred
    targets' frame; ``heatmap_size`` defaults to a quarter of each. All crops of one image come from one
    call of the fused crop kernel."""
    input_size = tuple(int(s) for s in input_size)
    crop_size = input_size if crop_size is None else tuple(int(s) for s in crop_size)
    hm_in = heatmap_size_for(input_size) if heatmap_size is None else tuple(int(s) for s in heatmap_size)
    hm_crop = heatmap_size_for(crop_size) if heatmap_size is None else hm_in
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    idx = np.asarray(person_index, dtype=np.int64).reshape(-1)
    if len(idx) != len(b):
        raise ValueError(f"boxes has {len(b)} rows but person_index has {len(idx)}")
    if not np.isfinite(b).all() or ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError("boxes must be finite with x2 > x1 and y2 > y1")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(persons)):
        raise ValueError(f"person_index must lie in [0, {len(persons)})")
    if not box_scale > 0:
        raise ValueError(f"box_scale must be > 0, got {box_scale}")
    kp = np.stack([persons[i].keypoints for i in idx]) if len(idx) else np.zeros((0, NUM_JOINTS, 3))
    gt = np.array([persons[i].bbox for i in idx], dtype=np.float64).reshape(-1, 4)
    gt_xyxy = np.concatenate([gt[:, :2], gt[:, :2] + gt[:, 2:]], 1)
    prop_px = boxes_to_theta(torch.from_numpy(b), input_size, box_scale, keep_aspect).numpy()
    gt_px = boxes_to_theta(torch.from_numpy(gt_xyxy), crop_size, box_scale, keep_aspect).numpy()
    img_to_prop = _invert(prop_px)
    target, weight = _normalized_targets(kp, img_to_prop, input_size, hm_in, sigma)
    ctarget, cweight = _normalized_targets(kp, _invert(gt_px), crop_size, hm_crop, sigma)
    star_px = _compose(img_to_prop, gt_px)  # GT-crop px -> proposal px
    theta_star = pixel_to_normalized_theta(torch.from_numpy(star_px), input_size, crop_size).to(torch.float32)
    images = torch.empty((len(idx), 3, *input_size), dtype=torch.float32)
    paths = [persons[i].image_path for i in idx]
    for path in dict.fromkeys(paths):
        rows = torch.tensor([r for r, p in enumerate(paths) if p == path], dtype=torch.long)
        if path not in frames:
            raise ValueError(f"frames lacks the image {path!r}")
        images[rows] = affine_crop(frames[path], torch.from_numpy(prop_px[rows.numpy()]).to(torch.float32),
                                   input_size, torch.zeros(len(rows), dtype=torch.long), mean=MEAN, std=STD,
                                   reverse_channels=True)
    return CropSet(images, target, weight, ctarget, cweight, theta_star, torch.from_numpy(prop_px),
                   torch.from_numpy(b), torch.from_numpy(kp), torch.from_numpy(gt), torch.from_numpy(idx),
                   torch.tensor([persons[i].image_id for i in idx], dtype=torch.long))


def make_crops(persons: Sequence[Person], frames: Dict[str, Tensor], augmenter, boxes_per_person: int,
               rng: np.random.Generator, **kwargs) -> CropSet:
    """``boxes_per_person`` proposals per person from ``augmenter.sample_boxes(keypoints, gt_box_xywh, n,
    rng)`` (see :mod:`rmpe.sstn.augment`), cropped with :func:`crops_from_boxes` (``kwargs`` go there)."""
    if not persons:
        raise ValueError("persons is empty")
    boxes, index = [], []
    for i, p in enumerate(persons):
        b = np.asarray(augmenter.sample_boxes(p.keypoints.copy(), p.bbox, boxes_per_person, rng), dtype=np.float64)
        if b.shape != (boxes_per_person, 4):
            raise ValueError(f"the augmenter returned boxes of shape {b.shape}, expected ({boxes_per_person}, 4)")
        boxes.append(b)
        index += [i] * boxes_per_person
    return crops_from_boxes(persons, frames, np.concatenate(boxes), index, **kwargs)


def _flip_permutation(k: int) -> Tensor:
    perm = list(range(k))
    for a, b in FLIP_PAIRS:
        if max(a, b) < k:
            perm[a], perm[b] = b, a
    return torch.tensor(perm, dtype=torch.long)


def flip_crops(crops: CropSet) -> CropSet:
    """The horizontal mirror of every crop, as a new :class:`CropSet` (``crops`` is not changed): images
    and heatmaps flipped along x with the left/right joints swapped (``FLIP_PAIRS``, COCO order);
    ``theta_star`` conjugated by the mirror (``x -> -x`` in both normalized frames: ``a01``, ``a10`` and
    ``tx`` change sign); ``proposal_theta_px`` composed with the pixel mirror ``u -> W - 1 - u``, so
    decoding a flipped map still gives image pixels; ``keypoints`` permuted like the channels (channel k
    of the mirror shows the person's joint ``perm[k]``). Boxes, GT boxes and ids are unchanged."""
    if not isinstance(crops, CropSet):
        raise ValueError(f"crops must be an rmpe.sstn.datasets.CropSet, got {type(crops).__name__}")
    k = crops.target.shape[1]
    perm = _flip_permutation(k)
    star = crops.theta_star.clone()
    star[:, 0, 1], star[:, 1, 0], star[:, 0, 2] = -star[:, 0, 1], -star[:, 1, 0], -star[:, 0, 2]
    prop = crops.proposal_theta_px.clone()
    w = crops.images.shape[-1]
    prop[:, :, 2] = prop[:, :, 2] + (w - 1) * prop[:, :, 0]
    prop[:, :, 0] = -prop[:, :, 0]
    return CropSet(crops.images.flip(-1), crops.target.flip(-1)[:, perm], crops.weight[:, perm],
                   crops.centred_target.flip(-1)[:, perm], crops.centred_weight[:, perm], star, prop,
                   crops.boxes.clone(), crops.keypoints[:, perm], crops.gt_boxes.clone(), crops.person.clone(),
                   crops.image_id.clone())


class ResampledCrops:
    """A training set that changes every epoch: ``crops = ResampledCrops(persons, frames, augmenter,
    boxes_per_person, seed)(epoch)`` draws ``boxes_per_person`` new boxes per person with
    ``numpy.random.default_rng([seed, epoch])`` (:func:`make_crops`; ``kwargs`` go there), so the crops
    are a deterministic function of (seed, epoch) and a resumed :class:`rmpe.sstn.trainer.Trainer` sees the same
    ones. ``flip``: each crop is mirrored (:func:`flip_crops`) with probability 1/2, from the same
    generator. The last epoch's set is cached."""

    def __init__(self, persons: Sequence[Person], frames: Dict[str, Tensor], augmenter, boxes_per_person: int,
                 seed: int = 0, flip: bool = False, **kwargs):
        if not persons:
            raise ValueError("persons is empty")
        if isinstance(boxes_per_person, bool) or int(boxes_per_person) != boxes_per_person or boxes_per_person < 1:
            raise ValueError(f"boxes_per_person must be a positive integer, got {boxes_per_person!r}")
        if not callable(getattr(augmenter, "sample_boxes", None)):
            raise ValueError(f"augmenter must have a sample_boxes method, got {type(augmenter).__name__}")
        self.persons, self.frames, self.augmenter = list(persons), frames, augmenter
        self.boxes_per_person, self.seed, self.flip, self.kwargs = int(boxes_per_person), int(seed), bool(flip), kwargs
        self._cache = None

    def __call__(self, epoch: int) -> CropSet:
        epoch = int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        cs = make_crops(self.persons, self.frames, self.augmenter, self.boxes_per_person, rng, **self.kwargs)
        if self.flip:
            mirror = torch.from_numpy(rng.random(len(cs)) < 0.5)
            if mirror.any():
                f = flip_crops(cs.subset(mirror.nonzero()[:, 0]))
                keep = cs.subset((~mirror).nonzero()[:, 0])
                cs = CropSet.concat([keep, f])
        self._cache = (epoch, cs)
        return cs


def detector_boxes(persons: Sequence[Person], detections, iou_thresh: float = 0.5, score_thresh: float = 0.0):
    """Real detector boxes for ``persons``: per image, the COCO greedy one-to-one matching of the
    detections (score ``>= score_thresh``; a COCO result list or its path) to the GT boxes of
    ``persons`` (``rmpe.pgpg.match_detections``). Returns ``(boxes [M, 4] xyxy float64, person_index [M])``
    for the matched persons (IoU ``>= iou_thresh``), in person order."""
    from ..io import read_json
    from ..pgpg import match_detections

    dets = read_json(detections, "detections file") if isinstance(detections, (str, os.PathLike)) else detections
    by_image: Dict[int, list] = {}
    for n, d in enumerate(dets):
        if "image_id" not in d or "bbox" not in d or "score" not in d:
            raise ValueError(f"detection {n} lacks 'image_id', 'bbox' or 'score'")
        if d.get("category_id", 1) == 1 and float(d["score"]) >= score_thresh:
            by_image.setdefault(int(d["image_id"]), []).append(d)
    found = {}
    for iid in sorted({p.image_id for p in persons}):
        mine = [i for i, p in enumerate(persons) if p.image_id == iid]
        ds = by_image.get(iid, [])
        if not ds:
            continue
        pairs = match_detections(np.array([persons[i].bbox for i in mine]), np.array([d["bbox"] for d in ds]),
                                 np.array([d["score"] for d in ds]), iou_thresh)
        for gi, di, _ in pairs:
            x, y, w, h = (float(v) for v in ds[di]["bbox"])
            found[mine[gi]] = (x, y, x + w, y + h)
    order = sorted(found)
    return np.array([found[i] for i in order], dtype=np.float64).reshape(-1, 4), np.array(order, dtype=np.int64)


def heatmap_to_image_theta(proposal_theta_px: Tensor, input_size: Sequence[int], heatmap_size: Sequence[int]) -> Tensor:
    """The map [N, 2, 3] (float64) from heatmap pixels of the proposal frame (the SDTN's output) to
    image pixels: heatmap pixel u -> proposal pixel ((2 u + 1) W / hw - 1) / 2 -> image (the same
    normalized frame). For ``rmpe_ext.ops.heatmap_decode``."""
    (h, w), (hh, hw) = (tuple(int(s) for s in input_size), tuple(int(s) for s in heatmap_size))
    sx, sy = w / hw, h / hh
    hm_to_prop = torch.tensor([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2]], dtype=torch.float64)
    m = proposal_theta_px.to(torch.float64)
    a = m[:, :, :2]
    return torch.cat([a @ hm_to_prop[:, :2], a @ hm_to_prop[:, 2:] + m[:, :, 2:]], 2)
