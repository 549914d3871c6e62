"""Plain NumPy references of the pose NMS operators (float64, loops, no kernels).

They follow docs/design.md section 2 literally and serve as the test oracle for the
paper and OKS formulations (AlphaPose's own code is the oracle for the
AlphaPose formulation) and as a readable statement of the semantics. Inputs
may be torch tensors or arrays; outputs are NumPy arrays.
"""
from __future__ import annotations

import math
import numpy as np

from .ops.pose_nms import _DEFAULTS, COCO_SIGMAS, OKSNMSParams

__all__ = ["pose_similarity", "pose_nms", "soft_oks_nms"]


def _np(x, dtype=np.float64):
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _params(method, params):
    return _DEFAULTS[method]() if params is None else params


def _effective_scores(joint_scores, method):
    s = _np(joint_scores).copy()
    if method in ("alphapose", "wholebody"):
        s[s == 0] = 1e-5
    return s


def _pair(method, p, ki, si, kj, sj, box_i, box_j, sigmas):
    """(similarity, match count) of reference pose i and pose j."""
    d = np.sqrt(((ki - kj) ** 2).sum(-1))
    wi, hi = box_i[2] - box_i[0], box_i[3] - box_i[1]
    if method == "alphapose":
        r = min(p.alpha * max(wi, hi), p.pck_cap)
        ksim = np.sum(np.where(d <= 1, np.tanh(si / p.delta1) * np.tanh(sj / p.delta1), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            match = int(np.sum(d / r <= 1))
        return ksim + p.mu * np.sum(np.exp(-d / p.delta2)), match
    if method == "wholebody":
        r = min(p.alpha * max(wi, hi), p.pck_cap)
        K = len(d)
        low = sj < p.score_thresh
        st = np.where((d <= 1) & low, np.tanh(si / p.delta1) * np.tanh(sj / p.delta1), 0.0)
        f = np.ones(K)
        f[K - 110:K - 42], f[K - 42:] = p.face_factor, p.hand_factor
        dt = np.where(low, 0.0, np.exp(-d / (p.delta2 * f)))
        parts = (slice(0, K - 110), slice(K - 110, K - 42), slice(K - 42, K))
        ws, wd = (1.0, p.face_weight_score, p.hand_weight_score), (1.0, p.face_weight_dist, p.hand_weight_dist)
        sim = sum(w * st[q].mean() for w, q in zip(ws, parts)) + p.mu * sum(w * dt[q].mean() for w, q in zip(wd, parts))
        factor = np.where(np.arange(K) < 26, 1.0, np.where(np.arange(K) < 94, p.face_factor, p.hand_factor))
        with np.errstate(divide="ignore", invalid="ignore"):
            match = int(np.sum(d / r <= factor))
        return sim, match
    if method == "paper":
        inside = (np.abs(kj[:, 0] - ki[:, 0]) <= p.box_frac * wi / 2) & \
                 (np.abs(kj[:, 1] - ki[:, 1]) <= p.box_frac * hi / 2)
        ksim = np.sum(np.where(inside, np.tanh(si / p.sigma1) * np.tanh(sj / p.sigma1), 0.0))
        return ksim + p.lam * np.sum(np.exp(-d ** 2 / p.sigma2)), int(inside.sum())
    # oks
    area = (wi * hi + (box_j[2] - box_j[0]) * (box_j[3] - box_j[1])) / 2 + np.spacing(1)
    e = d ** 2 / (2 * sigmas) ** 2 / area / 2
    if p.vis_thresh is not None:
        e = e[(si > p.vis_thresh) & (sj > p.vis_thresh)]
    return (float(np.exp(-e).mean()) if len(e) else 0.0), int(len(e))


def _sigmas(method, p, K):
    if method != "oks":
        return None
    return np.asarray(p.sigmas if p.sigmas is not None else COCO_SIGMAS, dtype=np.float64)


def _suppresses(method, p, sim, match, si=None, n_rem=0):
    if method == "alphapose":
        return sim > p.gamma or match >= p.match_thresh
    if method == "wholebody":  # the match normalized by the poses still in play (n_rem)
        m = 2 * n_rem * int(np.sum(si > p.score_thresh / 2))
        return sim > p.gamma or (match / m / 2 * len(si) if m >= 2 else 0.0) >= p.match_thresh
    return sim > (p.eta if method == "paper" else p.thresh)


def pose_similarity(poses, joint_scores, boxes, method="alphapose", params=None):
    """All-pairs (sim [N, N], match [N, N]); see rmpe_ext.ops.pose_similarity."""
    p = _params(method, params)
    P, B = _np(poses), _np(boxes)
    S = _effective_scores(joint_scores, method)
    sig = _sigmas(method, p, P.shape[1])
    N = P.shape[0]
    sim, match = np.zeros((N, N)), np.zeros((N, N), np.int64)
    for i in range(N):
        for j in range(N):
            sim[i, j], match[i, j] = _pair(method, p, P[i], S[i], P[j], S[j], B[i], B[j], sig)
    return sim, match


def _images(N, image_index):
    img = np.zeros(N, np.int64) if image_index is None else _np(image_index, np.int64)
    return [np.flatnonzero(img == v) for v in np.unique(img)]


def pose_nms(poses, joint_scores, boxes, scores=None, image_index=None, method="alphapose", params=None):
    """Greedy pose NMS with merging: (keep [M], poses [M, K, 2], scores [M, K], group [N])."""
    p = _params(method, params)
    P, B = _np(poses), _np(boxes)
    S = _effective_scores(joint_scores, method)
    N, K = P.shape[0], P.shape[1]
    rank = S.mean(1) if scores is None else _np(scores)
    sig = _sigmas(method, p, K)

    def rel(i, j, n_rem):
        sim, match = _pair(method, p, P[i], S[i], P[j], S[j], B[i], B[j], sig)
        return _suppresses(method, p, sim, match, S[i], n_rem)

    slots = []  # (pick, members in ascending index)
    for idx in _images(N, image_index):
        alive = sorted(idx.tolist(), key=lambda i: (-rank[i], i))
        while alive:
            i, n_rem = alive[0], len(alive)
            members = [j for j in alive[1:] if rel(i, j, n_rem)]
            # AlphaPose only removes the pick through its own criterion: one that removes others but
            # not itself stays first and is taken again (fewer poses remain then); one that removes
            # nothing is removed alone
            stays = method in ("alphapose", "wholebody") and bool(members) and not rel(i, i, n_rem)
            alive = ([i] if stays else []) + [j for j in alive[1:] if j not in members]
            slots.append((i, sorted(members if stays else members + [i])))

    keep, out_p, out_s, group = [], [], [], np.full(N, -1, np.int64)
    for i, members in slots:
        w, h = B[i, 2] - B[i, 0], B[i, 3] - B[i, 1]
        if p.merge:
            r = min(p.alpha * max(w, h), p.merge_cap)
            d = np.sqrt(((P[members] - P[i]) ** 2).sum(-1))  # [m, K]
            masked = S[members] * (d <= r)
            with np.errstate(divide="ignore", invalid="ignore"):
                normed = masked / masked.sum(0)
            mp = (P[members] * normed[:, :, None]).sum(0)
            ms = (masked * normed).sum(0)
            if method not in ("alphapose", "wholebody"):  # a joint without weight keeps the pick's (AlphaPose: NaN)
                empty = masked.sum(0) == 0
                mp[empty], ms[empty] = P[i][empty], S[i][empty]
        else:
            mp, ms = P[i].copy(), S[i].copy()
        if S[i].max() < p.score_thresh:
            continue
        if not np.isnan(ms).any() and ms.max() < p.score_thresh:
            continue
        xs, ys = mp[:, 0].tolist(), mp[:, 1].tolist()
        if 2.25 * (max(xs) - min(xs)) * (max(ys) - min(ys)) < p.area_thresh:
            continue
        group[members] = len(keep)
        keep.append(i)
        out_p.append(mp)
        out_s.append(ms)
    return (np.array(keep, np.int64), np.array(out_p).reshape(-1, K, 2), np.array(out_s).reshape(-1, K), group)


def soft_oks_nms(poses, joint_scores, boxes, scores, image_index=None, thresh=0.9, sigmas=None, vis_thresh=None,
                 max_dets=20, linear=False):
    """Soft-OKS-NMS: (keep [M], rescored score of each kept pose [M])."""
    p = OKSNMSParams(thresh=thresh, vis_thresh=vis_thresh, sigmas=sigmas)
    P, B, S, rank = _np(poses), _np(boxes), _np(joint_scores), _np(scores)
    sig = _sigmas("oks", p, P.shape[1])
    keep, kept_scores = [], []
    for idx in _images(P.shape[0], image_index):
        alive, cur, taken = idx.tolist(), {i: rank[i] for i in idx.tolist()}, 0
        while alive and (max_dets < 0 or taken < max_dets):
            taken += 1
            i = max(alive, key=lambda j: (cur[j], -j))
            keep.append(i)
            kept_scores.append(cur[i])
            alive.remove(i)
            for j in alive:
                oks = _pair("oks", p, P[i], S[i], P[j], S[j], B[i], B[j], sig)[0]
                if linear:
                    cur[j] = cur[j] * (1 - oks) if oks >= thresh else cur[j]
                else:
                    cur[j] = cur[j] * math.exp(-oks ** 2 / thresh)
    return np.array(keep, np.int64), np.array(kept_scores)
