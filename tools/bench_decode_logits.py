"""The pipeline's decode stage on BlazePose's logit heatmaps: decoded directly (the sigmoid on the peaks only, as
``rmpe.pipeline.Pipeline`` does now) against the former path (a sigmoid over every map, then the decode kernel),
on the same real heatmaps, interleaved in one process so that both see the same machine load.

The heatmaps: BlazePose (LiteRT) on the 118 AP_H_56 boxes of the shipped ``data/coco4`` images, recorded once; the
stage is timed as the pipeline runs it (batches of ``--batch`` persons: the joint pick, the activation, the
decode). Prints the median and quartiles of ``--repeat`` rounds of each, and checks the outputs agree (same
keypoints, scores within 1e-6).

    python tools/bench_decode_logits.py [--threads 1] [--repeat 40] [--batch 64]
"""
import argparse
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rmpe_ext import ops

    from rmpe.pipeline import Pipeline, crop_theta, heatmap_to_image
    from rmpe.pipeline.detections import image_files, load_detections, load_image
    from rmpe.pipeline.models import BlazePoseModel

    data = ROOT / "data" / "coco4"
    dets = load_detections(data / "test_coco_det_AP_H_56.json")
    ids = list(dets)
    files = image_files(data, ids, data / "test_coco.json")
    model = BlazePoseModel(num_threads=args.threads)
    heatmaps, thetas = [], []
    for i in ids:
        fb = dets[i]
        theta = crop_theta(fb.boxes, model.input_size, model.box_preset)
        crops = ops.affine_crop(torch.from_numpy(load_image(files[i])), theta.to(torch.float32), model.input_size,
                                torch.zeros(len(fb), dtype=torch.long), mean=model.mean, std=model.std,
                                reverse_channels=True, interpolation="bilinear-u8")
        heatmaps.append(model(crops))
        thetas.append(theta)
    heatmaps, theta = torch.cat(heatmaps), torch.cat(thetas)
    n = heatmaps.shape[0]
    pipe = Pipeline(model, nms="none")
    jm = torch.tensor(model.joint_map)

    def former(hm39, th):  # the decode stage before: joint pick, sigmoid over the maps, decode
        hm = torch.sigmoid(hm39.index_select(1, jm).contiguous())
        m = heatmap_to_image(th, model.input_size, hm.shape[2:], model.heatmap_offset)
        return ops.heatmap_decode(hm, m, "quarter")

    def direct(hm39, th):  # the decode stage now (Pipeline._decode)
        return pipe._decode(hm39, th)

    batches = [(heatmaps[s:s + args.batch], theta[s:s + args.batch]) for s in range(0, n, args.batch)]
    for (h, t) in batches:
        a, b = former(h, t), direct(h, t)
        assert torch.equal(a[0], b[0]) and float((a[1] - b[1]).abs().max()) <= 1e-6
    times = {"former": [], "direct": []}
    fns = {"former": former, "direct": direct}
    for r in range(args.repeat):
        for name in (("former", "direct") if r % 2 == 0 else ("direct", "former")):
            t0 = time.perf_counter()
            for h, t in batches:
                fns[name](h, t)
            times[name].append(time.perf_counter() - t0)
    print(f"decode stage, {n} persons x 17 joints of 64x64 logit heatmaps (batches of {args.batch}), "
          f"{args.threads} thread(s), {args.repeat} interleaved rounds; same keypoints, scores within 1e-6")
    for name, label in (("former", "sigmoid over the maps + decode"), ("direct", "logits decoded, sigmoid of peaks")):
        q = statistics.quantiles([1000 * x for x in times[name]], n=4)
        print(f"  {label:<34} median {q[1]:6.2f} ms   (quartiles {q[0]:.2f} - {q[2]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
