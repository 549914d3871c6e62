"""PGPG: atomic poses, per-atom box-offset mixtures, the box augmenter, the fit-pgpg command."""
import numpy as np
import pytest

from rmpe.pgpg import NO_ATOM, PGPG, load_default


def _pose():
    kp = np.zeros((17, 3))
    kp[:, 2] = 2
    kp[:, 0] = 100 + np.arange(17)
    kp[:, 1] = 50 + 10 * np.arange(17)
    return kp


def test_shipped_model_interface():
    m = load_default()
    kp = _pose()
    a = m.atom_of(kp)
    assert isinstance(a, int) and 0 <= a < m.n_atoms
    boxes = m.sample_boxes(kp, [90, 40, 40, 200], 16, np.random.default_rng(0))
    assert boxes.shape == (16, 4) and boxes.dtype == np.float64
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    kp[[5, 6], 2] = 0
    assert m.atom_of(kp) == NO_ATOM
    assert m.sample_boxes(kp, [90, 40, 40, 200], 4, np.random.default_rng(0)).shape == (4, 4)
