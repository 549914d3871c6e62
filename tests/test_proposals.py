"""Reading COCO keypoint results files into batched tensors."""
import gzip
import json

import pytest
import torch

from rmpe_ext.proposals import load_proposals, proposals_from_records


def test_shipped_proposals(dev_proposals):
    p = dev_proposals
    assert p.poses.shape == (413, 17, 2) and p.joint_scores.shape == (413, 17) and p.boxes.shape == (413, 4)
    assert p.num_images == 12
    r = p.records[0]
    x, y, w, h = r["det_bbox"]
    assert p.boxes[0].tolist() == pytest.approx([x, y, x + w, y + h], rel=1e-6)
    assert p.poses[0, 16].tolist() == pytest.approx(r["keypoints"][48:50], rel=1e-6)
    img = p.image(3)
    assert (img.image_ids == img.image_ids[0]).all() and len(img.poses) == (p.image_index == 3).sum()


def test_plain_json_and_errors(tmp_path):
    rec = dict(image_id=1, keypoints=[1.0, 2.0, 0.5] * 17, score=0.9, bbox=[0, 0, 10, 20])
    f = tmp_path / "r.json"
    f.write_text(json.dumps([rec, dict(rec, image_id=2)]))
    p = load_proposals(f)
    assert p.image_index.tolist() == [0, 1] and p.boxes[0].tolist() == [0, 0, 10, 20]
    g = tmp_path / "r.json.gz"
    with gzip.open(g, "wt") as out:
        json.dump([rec], out)
    assert torch.equal(load_proposals(g).poses, p.poses[:1])
    with pytest.raises(ValueError, match="record 1: missing field 'score'"):
        proposals_from_records([rec, {k: v for k, v in rec.items() if k != "score"}])
    with pytest.raises(ValueError, match=r"record 1: 'keypoints' has 6 numbers, expected 3 \* K = 51"):
        proposals_from_records([rec, dict(rec, keypoints=[1.0] * 6)])
    with pytest.raises(ValueError, match="needs a 4-number xywh box"):
        proposals_from_records([dict(rec, bbox=[1, 2])])
    f.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_proposals(f)
    assert len(proposals_from_records([]).poses) == 0
