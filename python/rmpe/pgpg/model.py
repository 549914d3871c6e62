"""Pose-guided proposals generator (PGPG), RMPE paper section 3.3, docs/design.md section 3.

A PGPG learns ``P(dB | atom(P))``: the distribution of the offsets between a real detector's box and
the ground-truth box of a person, given the *atomic pose* of that person's ground-truth pose, and
samples it to make many detector-like boxes (augmented human proposals) for training the SSTN + SPPE.

Conventions
-----------
* Keypoints: COCO-17 order, ``np.ndarray [17, 3]`` of ``(x, y, v)`` in image pixels; a joint is
  *labelled* when ``v > 0`` (COCO's 1 = labelled but occluded, 2 = visible); unlabelled joints' x, y
  are ignored.
* Boxes: a ground-truth box is COCO ``xywh`` (``x, y`` the top-left corner, in pixels); sampled boxes
  are returned as ``xyxy`` pixels, float64. Boxes are not clipped to the image (its size is unknown
  here); clip them where the image is known.
* Torso: the *shoulder point* is the mean of the labelled shoulders (joints 5, 6), the *hip point* the
  mean of the labelled hips (11, 12); a pose's torso is annotated when at least one shoulder and one
  hip are labelled and the two points are at least ``MIN_TORSO_PX`` apart. The torso centre is the
  midpoint of the two points, its length their distance.
* Alignment: ``(xy - torso centre) / torso length`` (translation and scale only, no rotation, so a
  lying person stays a different atom from a standing one, as their box offsets differ).
* Missing joints: in aligned coordinates an unlabelled joint takes the mean aligned position of that
  joint over the poses clustered at fit time (``joint_mean``), both when clustering and in
  :meth:`PGPG.atom_of`, so ``atom_of`` of a clustered pose is exactly its k-means label. Only poses with
  at least ``min_joints`` labelled joints are clustered (so imputation never dominates the atoms);
  every torso-annotated pose still gets an atom from :meth:`PGPG.atom_of`.
* Offsets: for a detected box ``(x1d, y1d, x2d, y2d)`` and a ground-truth box ``(x1, y1, x2, y2)`` of
  width ``w`` and height ``h``: ``((x1d-x1)/w, (y1d-y1)/h, (x2d-x2)/w, (y2d-y2)/h)``, each side minus
  the ground-truth side, normalized by the ground-truth side length in that direction (4 numbers).
* Matching (fit): per image, detections with ``score >= score_thresh`` are taken in decreasing score
  order (ties: file order), each matched to the not-yet-matched non-crowd ground-truth person box of
  highest IoU, when that IoU is ``>= iou_thresh`` (the COCO evaluation's greedy one-to-one rule; IoU
  from ``pycocotools.mask.iou``). All non-crowd person boxes take part in matching (so a detection of
  a person without keypoints cannot be matched to a neighbour); only matched persons with an
  annotated torso give offsets.
* Mixtures: per atom, a ``sklearn.mixture.GaussianMixture`` (full covariances) with 1 to
  ``max_components`` components, chosen by BIC; a k-component mixture is only tried with at least
  ``min_samples_per_component * k`` offsets. The *pooled* mixture is fitted the same way on all
  offsets. An atom with fewer than ``min_atom_samples`` offsets uses the pooled mixture instead of its
  own. Otherwise, with ``n`` offsets, its mixture is ``lam * own + (1 - lam) * pooled`` with
  ``lam = n / (n + prior_strength)`` (still a Gaussian mixture: the components of both, reweighted):
  a pseudo-count back-off that keeps small atoms from overfitting; ``prior_strength=0`` gives the
  paper's plain per-atom mixtures. The default (400) was chosen by 5-fold cross-validated held-out
  likelihood on the COCO subset (plain per-atom mixtures scored below the pooled one there); measured
  2026-12-01 with ``rmpe fit-pgpg ... --cv 5`` (mean held-out log-likelihood per offset, 983 offsets):
  back-off 400: 6.518, pooled mixture: 6.495, plain per-atom (``prior_strength=0``): 5.793, one
  Gaussian: 5.181.
* Fallback: a pose whose torso is not annotated has no atom (``atom_of`` returns :data:`NO_ATOM`,
  -1) and :meth:`PGPG.sample_boxes` samples it from the pooled mixture.
* Sampling: a sampled box must keep a positive size: offsets whose box would be narrower or lower
  than ``MIN_SIDE_FRAC`` of the ground-truth side are redrawn (rejection sampling; rare).

Checks: :func:`matched_pairs` gives the matched pairs as ``fit`` sees them; :func:`cross_validate`
scores held-out offsets (per-atom model vs pooled mixture vs one Gaussian) and compares the IoU of
sampled boxes with that of the real detections (``rmpe fit-pgpg --cv 5``).

Files: :meth:`PGPG.save` writes an ``.npz`` (numeric arrays and a JSON settings string, no pickle),
atomically; :meth:`PGPG.load` reads it with ``allow_pickle=False``. :func:`load_default` loads the model
fitted on the COCO val2017 538-image subset with the real AP_H_56 detections, shipped in
``rmpe/data/pgpg_coco_subset538.npz``.

The parts: :mod:`rmpe.pgpg.atoms` (torso, alignment), :mod:`rmpe.pgpg.matching` (offsets, matching),
this module (mixtures, the model, its files, cross-validation), :mod:`rmpe.pgpg.plot` (the figure).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..io import atomic_path, read_json
from .atoms import MIN_SIDE_FRAC, NO_ATOM, NUM_JOINTS, _align, _box_xywh, _impute, _keypoints_array, _nearest
from .matching import _iou_xyxy_vs_xywh, _load_gt, _match, _persons_and_dets, matched_pairs, offsets_to_boxes

__all__ = ["PGPG", "load_default", "cross_validate", "DEFAULT_MODEL", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")  # python/rmpe/data
DEFAULT_MODEL = os.path.join(_DATA, "pgpg_coco_subset538.npz")

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------------
# mixtures

class _Mixture:
    """A Gaussian mixture over 4-d offsets: weights [k], means [k, 4], covariances [k, 4, 4] (float64)."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.covariances = np.asarray(covariances, dtype=np.float64)
        self.weights = self.weights / self.weights.sum()
        self.chol = np.linalg.cholesky(self.covariances)

    @property
    def n_components(self) -> int:
        return len(self.weights)

    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        m = self.mean()
        d = self.means - m
        return np.einsum("k,kij->ij", self.weights, self.covariances) + np.einsum("k,ki,kj->ij", self.weights, d, d)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(self.n_components, size=n, p=self.weights)
        z = rng.standard_normal((n, 4))
        return self.means[comp] + np.einsum("nij,nj->ni", self.chol[comp], z)

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """Per-row log density of x [N, 4] -> [N]."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = np.empty((len(x), self.n_components))
        for k in range(self.n_components):
            d = x - self.means[k]
            sol = np.linalg.solve(self.chol[k], d.T)  # L^-1 d
            logdet = 2.0 * np.log(np.diag(self.chol[k])).sum()
            out[:, k] = np.log(self.weights[k]) - 0.5 * ((sol ** 2).sum(0) + logdet + 4 * np.log(2 * np.pi))
        m = out.max(1, keepdims=True)
        return (m + np.log(np.exp(out - m).sum(1, keepdims=True)))[:, 0]


def _backoff(own: _Mixture, pooled: _Mixture, lam: float) -> _Mixture:
    """``lam * own + (1 - lam) * pooled`` as one mixture (lam = 1: ``own``)."""
    if lam >= 1.0:
        return own
    return _Mixture(np.concatenate([lam * own.weights, (1.0 - lam) * pooled.weights]),
                    np.concatenate([own.means, pooled.means]), np.concatenate([own.covariances, pooled.covariances]))


def _fit_mixture(x: np.ndarray, max_components: int, min_samples_per_component: int, seed: int
                 ) -> Tuple[_Mixture, Dict[int, float]]:
    """BIC-selected full-covariance GaussianMixture on x [N, 4] -> (mixture, {k: BIC})."""
    from sklearn.mixture import GaussianMixture

    best, bics = None, {}
    for k in range(1, max_components + 1):
        if k > 1 and len(x) < min_samples_per_component * k:
            break
        gm = GaussianMixture(n_components=k, covariance_type="full", n_init=3, reg_covar=1e-5,
                             random_state=seed, max_iter=500)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(x)
        bics[k] = float(gm.bic(x))
        if best is None or bics[k] < bics[best[0]]:
            best = (k, gm)
    gm = best[1]
    return _Mixture(gm.weights_, gm.means_, gm.covariances_), bics


# ----------------------------------------------------------------------------------------------------
# the model

class PGPG:
    """A fitted pose-guided proposals generator (see this module's docstring for every convention).

    Attributes: ``atoms`` float64 [K, 17, 2] torso-aligned atomic poses (k-means centres);
    ``joint_mean`` float64 [17, 2] aligned positions given to unlabelled joints; ``mixtures`` one
    mixture per atom (an atom using the pooled mixture shares ``pooled``); ``pooled`` the mixture over
    all offsets; ``atom_uses_pooled`` bool [K]; ``atom_counts`` int [K] offsets per atom;
    ``settings`` dict (fit parameters and counts); ``train_offsets`` float64 [N, 4] and
    ``train_atoms`` int [N] the fitted offsets and their atoms (kept for plots and checks)."""

    def __init__(self, atoms: np.ndarray, joint_mean: np.ndarray, mixtures: List[_Mixture], pooled: _Mixture,
                 atom_uses_pooled: np.ndarray, atom_counts: np.ndarray, settings: Dict[str, Any],
                 train_offsets: np.ndarray, train_atoms: np.ndarray):
        self.atoms = np.asarray(atoms, dtype=np.float64)
        self.joint_mean = np.asarray(joint_mean, dtype=np.float64)
        self.mixtures = list(mixtures)
        self.pooled = pooled
        self.atom_uses_pooled = np.asarray(atom_uses_pooled, dtype=bool)
        self.atom_counts = np.asarray(atom_counts, dtype=np.int64)
        self.settings = dict(settings)
        self.train_offsets = np.asarray(train_offsets, dtype=np.float64).reshape(-1, 4)
        self.train_atoms = np.asarray(train_atoms, dtype=np.int64).reshape(-1)
        if self.atoms.ndim != 3 or self.atoms.shape[1:] != (NUM_JOINTS, 2):
            raise ValueError(f"atoms must be [K, 17, 2], got {list(self.atoms.shape)}")
        if len(self.mixtures) != len(self.atoms):
            raise ValueError(f"{len(self.mixtures)} mixtures for {len(self.atoms)} atoms")

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, gt: Union[PathLike, Dict[str, Any]], detections: Union[PathLike, Sequence[Dict[str, Any]]],
            n_atoms: int = 8, *, score_thresh: float = 0.3, iou_thresh: float = 0.5, max_components: int = 4,
            prior_strength: float = 400.0,
            min_joints: int = 8, min_atom_samples: int = 30, min_samples_per_component: int = 20,
            image_ids: Optional[Sequence[Any]] = None, seed: int = 0, progress: bool = False) -> "PGPG":
        """Fits atomic poses and per-atom offset mixtures.

        ``gt``: COCO person-keypoints dict or its JSON path (annotations with image_id, bbox xywh,
        keypoints 51 numbers, iscrowd); ``detections``: list of COCO detection dicts (image_id, bbox
        xywh, score) or its JSON path. ``n_atoms``: k-means clusters; ``score_thresh``: detections
        below it are not used; ``iou_thresh``: minimum IoU of a matched pair; ``max_components``:
        largest mixture tried per atom (BIC picks); ``prior_strength``: pseudo-count of the back-off to
        the pooled mixture (0: none); ``min_joints``: labelled joints a pose needs to be
        clustered; ``min_atom_samples``: offsets an atom needs for its own mixture (else pooled);
        ``min_samples_per_component``: offsets per mixture component needed to try that many;
        ``image_ids``: restrict to these images (e.g. a training split); ``seed``: k-means and mixture
        seed (the fit is deterministic given it); ``progress``: print progress lines.

        Ground-truth boxes with zero width or height are skipped (they cannot normalize offsets). The
        returned model also carries, unsaved, ``kmeans_labels_`` (int [M]) and ``cluster_keypoints_``
        (M arrays [17, 3]): the k-means labels of the clustered poses and those poses, for checks.
        Raises ValueError naming the field/argument on malformed input or too little data."""
        from sklearn.cluster import KMeans

        for name, v, lo in (("n_atoms", n_atoms, 1), ("max_components", max_components, 1),
                            ("min_joints", min_joints, 2), ("min_atom_samples", min_atom_samples, 1),
                            ("min_samples_per_component", min_samples_per_component, 5)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name, v in (("score_thresh", score_thresh), ("iou_thresh", iou_thresh)):
            if not isinstance(v, (int, float, np.floating)) or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not isinstance(prior_strength, (int, float, np.floating)) or not prior_strength >= 0 \
                or not np.isfinite(prior_strength):
            raise ValueError(f"prior_strength must be a finite number >= 0, got {prior_strength!r}")
        if not 0.0 < iou_thresh <= 1.0:
            raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
        say = print if progress else (lambda *a, **k: None)

        persons, dets = _persons_and_dets(gt, detections, image_ids)
        n_gt_persons = sum(1 for ps in persons.values() for p in ps if not p["crowd"])
        n_with_kp = sum(1 for ps in persons.values() for p in ps if p["kp"] is not None)
        say(f"pgpg: {len(persons)} images, {n_gt_persons} non-crowd persons, {n_with_kp} with keypoints, "
            f"{sum(len(v) for k, v in dets.items() if k in persons)} detections")

        # aligned poses of every torso-annotated person
        aligned = {}
        for img, ps in persons.items():
            for j, p in enumerate(ps):
                if p["kp"] is not None:
                    a = _align(p["kp"])
                    if a is not None:
                        aligned[(img, j)] = a
        cluster_keys = [k for k, (xy, lab) in aligned.items() if lab.sum() >= min_joints]
        if len(cluster_keys) < n_atoms:
            raise ValueError(f"only {len(cluster_keys)} poses have a torso and >= {min_joints} labelled joints: "
                             f"too few for n_atoms={n_atoms}")
        xy = np.stack([aligned[k][0] for k in cluster_keys])  # [M, 17, 2] with NaN
        joint_mean = np.nanmean(xy, axis=0)
        if not np.isfinite(joint_mean).all():
            missing = sorted(set(np.where(~np.isfinite(joint_mean))[0].tolist()))
            raise ValueError(f"joint(s) {missing} are never labelled in the clustered poses")
        feats = np.where(np.isnan(xy), joint_mean[None], xy).reshape(len(xy), -1)
        km = KMeans(n_clusters=n_atoms, n_init=10, random_state=seed).fit(feats)
        atoms = km.cluster_centers_.reshape(n_atoms, NUM_JOINTS, 2).astype(np.float64)
        say(f"pgpg: k-means on {len(feats)} aligned poses -> {n_atoms} atoms, sizes {np.bincount(km.labels_, minlength=n_atoms).tolist()}")

        # matched offsets of torso-annotated persons
        pairs = _match(persons, dets, score_thresh, iou_thresh)
        n_matched = len(pairs["image_id"])
        t = pairs["has_torso"]
        offsets, ious = pairs["offsets"][t], pairs["iou"][t]
        off_atoms = np.array([_nearest(atoms, _impute(_align(k), joint_mean)) for k in pairs["keypoints"][t]],
                             dtype=np.int64).reshape(-1)
        if len(offsets) < min_atom_samples:
            raise ValueError(f"only {len(offsets)} matched ground-truth persons with a torso (score >= {score_thresh}, "
                             f"IoU >= {iou_thresh}): too few to fit offset mixtures (need >= {min_atom_samples})")
        counts = np.bincount(off_atoms, minlength=n_atoms)
        say(f"pgpg: {n_matched} matched pairs, {len(offsets)} with a torso; offsets per atom {counts.tolist()}")

        pooled, pooled_bic = _fit_mixture(offsets, max_components, min_samples_per_component, seed)
        mixtures, uses_pooled, bics = [], np.zeros(n_atoms, dtype=bool), {}
        own_components, lam = np.zeros(n_atoms, dtype=np.int64), np.zeros(n_atoms)
        for a in range(n_atoms):
            if counts[a] < min_atom_samples:
                mixtures.append(pooled)
                uses_pooled[a] = True
                say(f"pgpg: atom {a}: {counts[a]} offsets (< {min_atom_samples}) -> the pooled mixture")
                continue
            m, b = _fit_mixture(offsets[off_atoms == a], max_components, min_samples_per_component, seed)
            own_components[a] = m.n_components
            lam[a] = counts[a] / (counts[a] + prior_strength)
            mixtures.append(_backoff(m, pooled, lam[a]))
            bics[str(a)] = {str(k): v for k, v in b.items()}
            say(f"pgpg: atom {a}: {counts[a]} offsets -> {m.n_components} own component(s), weight {lam[a]:.3f} "
                f"(rest: pooled)")
        settings = dict(
            format_version=FORMAT_VERSION, n_atoms=int(n_atoms), score_thresh=float(score_thresh),
            iou_thresh=float(iou_thresh), max_components=int(max_components), prior_strength=float(prior_strength),
            min_joints=int(min_joints), atom_own_components=own_components.tolist(),
            atom_own_weight=lam.round(6).tolist(),
            min_atom_samples=int(min_atom_samples), min_samples_per_component=int(min_samples_per_component),
            seed=int(seed), n_images=len(persons), n_gt_persons=int(n_gt_persons), n_gt_with_keypoints=int(n_with_kp),
            n_torso_poses=len(aligned), n_clustered=len(cluster_keys), n_matched_pairs=int(n_matched),
            n_offsets=int(len(offsets)), mean_matched_iou=float(np.mean(ious)), pooled_bic={str(k): v for k, v in pooled_bic.items()},
            atom_bic=bics, kmeans_inertia=float(km.inertia_),
        )
        model = cls(atoms, joint_mean, mixtures, pooled, uses_pooled, counts, settings, offsets, off_atoms)
        model.kmeans_labels_ = km.labels_.copy()   # labels of the clustered poses (not saved)
        model.cluster_keypoints_ = [persons[i][j]["kp"].copy() for i, j in cluster_keys]
        return model

    # ---------------------------------------------------------------- queries
    def atom_of(self, keypoints: Any) -> int:
        """Atomic pose id of a pose: ``keypoints`` [17, 3] (x, y, v) image px (or 51 numbers) -> int in
        ``[0, n_atoms)``, the k-means centre nearest (Euclidean, in torso-aligned coordinates, unlabelled
        joints at ``joint_mean``) to the aligned pose; :data:`NO_ATOM` (-1) when the torso is not
        annotated. Does not modify ``keypoints``."""
        a = _align(_keypoints_array(keypoints))
        if a is None:
            return NO_ATOM
        return _nearest(self.atoms, _impute(a, self.joint_mean))

    def mixture(self, atom: int) -> _Mixture:
        """The offset mixture used for ``atom`` (the pooled one for :data:`NO_ATOM` or a small atom)."""
        if isinstance(atom, bool) or not isinstance(atom, (int, np.integer)) or not NO_ATOM <= atom < self.n_atoms:
            raise ValueError(f"atom must be an int in [-1, {self.n_atoms}), got {atom!r}")
        return self.pooled if atom == NO_ATOM else self.mixtures[atom]

    def sample_offsets(self, atom: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` normalized offsets from ``atom``'s mixture -> float64 [n, 4] (x1, y1, x2, y2 offsets as
        fractions of the ground-truth width/height); draws that would give a box side below
        ``MIN_SIDE_FRAC`` of the ground-truth side are redrawn."""
        _check_n_rng(n, rng)
        mix = self.mixture(atom)
        out = mix.sample(n, rng)
        for _ in range(1000):
            bad = (1.0 + out[:, 2] - out[:, 0] < MIN_SIDE_FRAC) | (1.0 + out[:, 3] - out[:, 1] < MIN_SIDE_FRAC)
            if not bad.any():
                return out
            out[bad] = mix.sample(int(bad.sum()), rng)
        raise RuntimeError("offset mixture keeps producing boxes of non-positive size")  # pragma: no cover

    def sample_boxes(self, keypoints: Any, gt_box_xywh: Any, n: int, rng: np.random.Generator) -> np.ndarray:
        """The box augmenter: ``n`` detector-like boxes for one annotated person.

        ``keypoints``: [17, 3] (x, y, v) image px, COCO-17; ``gt_box_xywh``: its ground-truth box, 4
        numbers COCO xywh px (w, h > 0); ``n``: int >= 0; ``rng``: ``np.random.Generator`` (the only
        source of randomness: the same generator state gives the same boxes). Returns float64 [n, 4]
        boxes xyxy image px (not clipped to the image). A pose with no annotated torso is sampled from
        the pooled mixture."""
        _check_n_rng(n, rng)
        g = _box_xywh(gt_box_xywh)
        atom = self.atom_of(keypoints)
        return offsets_to_boxes(self.sample_offsets(atom, n, rng), g)

    def log_likelihood(self, offsets: Any, atoms: Any) -> np.ndarray:
        """Log density of normalized ``offsets`` [N, 4] under the mixtures of ``atoms`` [N] (ints,
        -1 = pooled) -> float64 [N]."""
        o = np.atleast_2d(np.asarray(offsets, dtype=np.float64))
        a = np.asarray(atoms).reshape(-1)
        if o.shape[1:] != (4,) or len(a) != len(o):
            raise ValueError(f"offsets must be [N, 4] and atoms [N], got {list(o.shape)} and {list(a.shape)}")
        out = np.empty(len(o))
        for atom in np.unique(a):
            sel = a == atom
            out[sel] = self.mixture(int(atom)).log_likelihood(o[sel])
        return out

    def summary(self) -> Dict[str, Any]:
        """Counts and offset statistics, JSON-serializable."""
        per_atom = []
        own = self.settings.get("atom_own_components", [0] * self.n_atoms)
        lam = self.settings.get("atom_own_weight", [0.0] * self.n_atoms)
        for a in range(self.n_atoms):
            x = self.train_offsets[self.train_atoms == a]
            m = self.mixtures[a]
            per_atom.append(dict(atom=a, n_offsets=int(self.atom_counts[a]), uses_pooled=bool(self.atom_uses_pooled[a]),
                                 own_components=int(own[a]), own_weight=float(lam[a]),
                                 n_components=m.n_components, mixture_mean=m.mean().round(4).tolist(),
                                 offset_mean=(x.mean(0).round(4).tolist() if len(x) else None),
                                 offset_std=(x.std(0).round(4).tolist() if len(x) else None)))
        s = {k: self.settings[k] for k in ("n_images", "n_gt_persons", "n_gt_with_keypoints", "n_torso_poses",
                                           "n_clustered", "n_matched_pairs", "n_offsets", "n_atoms",
                                           "score_thresh", "iou_thresh") if k in self.settings}
        s.update(pooled_components=self.pooled.n_components,
                 offset_mean=self.train_offsets.mean(0).round(4).tolist(),
                 offset_std=self.train_offsets.std(0).round(4).tolist(), atoms=per_atom)
        return s

    # ---------------------------------------------------------------- files
    def save(self, path: PathLike) -> None:
        """Writes the model as ``.npz`` (no pickle), atomically."""
        comp_atom, w, mu, cov = [], [], [], []
        for a, m in [(NO_ATOM, self.pooled)] + [(a, m) for a, m in enumerate(self.mixtures) if not self.atom_uses_pooled[a]]:
            comp_atom += [a] * m.n_components
            w.append(m.weights)
            mu.append(m.means)
            cov.append(m.covariances)
        arrays = dict(
            atoms=self.atoms, joint_mean=self.joint_mean, atom_uses_pooled=self.atom_uses_pooled,
            atom_counts=self.atom_counts, gmm_atom=np.array(comp_atom, dtype=np.int64),
            gmm_weights=np.concatenate(w), gmm_means=np.concatenate(mu), gmm_covariances=np.concatenate(cov),
            train_offsets=self.train_offsets.astype(np.float32), train_atoms=self.train_atoms.astype(np.int16),
            settings=np.array(json.dumps(self.settings, sort_keys=True)),
        )
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: PathLike) -> "PGPG":
        """Reads a model written by :meth:`save`; errors name the file and the missing field."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"PGPG model {path!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"PGPG model {path!r} is not a readable .npz file: {e}") from None
        need = ("atoms", "joint_mean", "atom_uses_pooled", "atom_counts", "gmm_atom", "gmm_weights", "gmm_means",
                "gmm_covariances", "train_offsets", "train_atoms", "settings")
        missing = [k for k in need if k not in data]
        if missing:
            raise ValueError(f"PGPG model {path!r} lacks field(s) {missing}")
        settings = json.loads(str(data["settings"]))
        if settings.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"PGPG model {path!r} has format version {settings.get('format_version')}, "
                             f"this code reads {FORMAT_VERSION}")
        ca = data["gmm_atom"]

        def mix(a):
            sel = ca == a
            if not sel.any():
                raise ValueError(f"PGPG model {path!r} has no mixture for atom {a}")
            return _Mixture(data["gmm_weights"][sel], data["gmm_means"][sel], data["gmm_covariances"][sel])

        pooled = mix(NO_ATOM)
        uses = data["atom_uses_pooled"].astype(bool)
        mixtures = [pooled if uses[a] else mix(a) for a in range(len(data["atoms"]))]
        return cls(data["atoms"], data["joint_mean"], mixtures, pooled, uses, data["atom_counts"], settings,
                   data["train_offsets"], data["train_atoms"])

    # ---------------------------------------------------------------- figure
    def plot(self, path: PathLike, atoms: Optional[Sequence[int]] = None, cols: int = 4) -> None:
        """Paper Figure 5: each atomic pose beside the marginal offset densities of its mixture (lines)
        over the histogram of its fitted offsets; written as a PNG (matplotlib Agg), atomically
        (:func:`rmpe.pgpg.plot.plot_pgpg`)."""
        from .plot import plot_pgpg

        plot_pgpg(self, path, atoms, cols)


def _check_n_rng(n: Any, rng: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def cross_validate(gt: Union[PathLike, Dict[str, Any]], detections: Union[PathLike, Sequence[Dict[str, Any]]],
                   folds: int = 5, seed: int = 0, samples_per_person: int = 20, **fit_kwargs: Any) -> Dict[str, Any]:
    """Held-out check of the fitted model: images are split into ``folds`` random folds (``seed``); for
    each, a PGPG is fitted on the other folds (``fit_kwargs`` as :meth:`PGPG.fit`, same ``seed``) and its
    held-out matched offsets are scored. Returns (means over the held-out offsets of all folds):

    * ``loglik_atom``: mean log density under the offsets' own atom mixtures (the PGPG model);
      ``loglik_pooled``: under the pooled mixture (no pose conditioning); ``loglik_gaussian``: under a
      single Gaussian fitted to all training offsets;
    * ``iou_real``: quantiles (10, 25, 50, 75, 90 %) of the held-out detections' IoU with their GT box;
      ``iou_sampled``: the same for ``samples_per_person`` boxes sampled per held-out person by
      :meth:`PGPG.sample_boxes`, counting only samples with IoU >= ``iou_thresh`` (the real pairs are
      selected by that rule); ``sampled_below_iou_thresh``: the fraction of samples below it;
      ``ks_iou``: the two-sample Kolmogorov-Smirnov statistic between the two IoU sets.
    """
    from scipy.stats import ks_2samp
    from sklearn.mixture import GaussianMixture

    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    gt = _load_gt(gt)
    if isinstance(detections, (str, os.PathLike)):
        detections = read_json(detections, "detections file")
    iou_thresh = fit_kwargs.get("iou_thresh", 0.5)
    images = sorted({a["image_id"] for a in gt["annotations"] if isinstance(a, dict) and "image_id" in a}, key=str)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(images, rng.permutation(len(images)) % folds))
    ll = {"atom": [], "pooled": [], "gaussian": []}
    iou_real, iou_samp, n_test = [], [], 0
    for f in range(folds):
        train = [i for i in images if fold_of[i] != f]
        test = [i for i in images if fold_of[i] == f]
        model = PGPG.fit(gt, detections, image_ids=train, seed=seed, **fit_kwargs)
        pairs = matched_pairs(gt, detections, model.settings["score_thresh"], model.settings["iou_thresh"], test)
        t = pairs["has_torso"]
        if not t.any():
            continue
        off, kps, gtb = pairs["offsets"][t], pairs["keypoints"][t], pairs["gt_xywh"][t]
        n_test += len(off)
        atoms = np.array([model.atom_of(k) for k in kps])
        ll["atom"].append(model.log_likelihood(off, atoms))
        ll["pooled"].append(model.pooled.log_likelihood(off))
        g1 = GaussianMixture(1, covariance_type="full", reg_covar=1e-5).fit(model.train_offsets)
        ll["gaussian"].append(_Mixture(g1.weights_, g1.means_, g1.covariances_).log_likelihood(off))
        iou_real.append(pairs["iou"][t])
        srng = np.random.default_rng(seed + 1000 + f)
        for k, b in zip(kps, gtb):
            boxes = model.sample_boxes(k, b, samples_per_person, srng)
            iou_samp.append(_iou_xyxy_vs_xywh(boxes, np.repeat(b[None], len(boxes), 0)))
    if n_test == 0:
        raise ValueError("no held-out matched persons with a torso in any fold")
    real = np.concatenate(iou_real)
    samp = np.concatenate(iou_samp)
    kept = samp[samp >= iou_thresh]
    q = [10, 25, 50, 75, 90]
    return dict(folds=int(folds), n_heldout=int(n_test),
                loglik_atom=float(np.concatenate(ll["atom"]).mean()),
                loglik_pooled=float(np.concatenate(ll["pooled"]).mean()),
                loglik_gaussian=float(np.concatenate(ll["gaussian"]).mean()),
                iou_real=np.percentile(real, q).round(4).tolist(),
                iou_sampled=np.percentile(kept, q).round(4).tolist() if len(kept) else None,
                sampled_below_iou_thresh=float(np.mean(samp < iou_thresh)),
                ks_iou=float(ks_2samp(real, kept).statistic) if len(kept) else None)


_DEFAULT: Optional[PGPG] = None


def load_default() -> PGPG:
    """The model fitted on the COCO val2017 538-image subset with the real AP_H_56 person detections
    (``rmpe/data/pgpg_coco_subset538.npz``), loaded once and cached (treat it as read-only)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PGPG.load(DEFAULT_MODEL)
    return _DEFAULT
