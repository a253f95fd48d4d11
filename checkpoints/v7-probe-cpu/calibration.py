"""Can a global brightness factor learned on the training pool fix a model's per-scene level on lol-v1-val?

For each image: the model's output in global mode at its defaults (fp32), and features of the scene (the
network's global context g, the one vector its film and colour layers read; a 12-bin histogram of the
input's log grey; an 8-bin histogram of the output's grey; both mean levels). Ridge regressions from the
features to log(reference level / output level) are fitted on lol-v1-train-full and applied to
lol-v1-val as a factor on the output (clamped): val PSNR against the model's own and against the oracle
factor (the reference's level). Prints a table and writes JSON.

    python checkpoints/v7-probe-cpu/calibration.py --data ../shared/datasets --model nanolily-v5 --out calibration.json
"""
import argparse, json
import numpy as np, torch
from nanolily.models.weights import load_model
from nanolily.training.data import all_pairs, load_rgb_uint8
from nanolily.engine.pipeline import enhance_tensor
from nanolily.training.metrics import psnr, mean_grey, to_grey

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True); ap.add_argument("--model", default="nanolily-v5"); ap.add_argument("--out")
args = ap.parse_args()
torch.set_num_threads(2)
model = load_model(args.model).eval()
captured = {}
model.film.register_forward_pre_hook(lambda m, a: captured.__setitem__("g", a[0].detach().clone()))


def scenes(split, keep):
    rows = []
    for p in all_pairs(f"{args.data}/lol-v1", split=f"{args.data}/splits/{split}"):
        low, high = (load_rgb_uint8(q).float()[None] / 255 for q in (p.low, p.high))
        with torch.inference_mode():
            out = enhance_tensor(low, model, precision="fp32")
        h_in = torch.histc(torch.log2(to_grey(low).flatten().clamp_min(1 / 512)), 12, -9, 0)
        h_out = torch.histc(to_grey(out).flatten(), 8, 0, 1)
        f = torch.cat([captured["g"][0], h_in / h_in.sum(), h_out / h_out.sum(),
                       torch.stack([mean_grey(low).log(), mean_grey(out).log()]).flatten()])
        rows.append((f.numpy(), float((mean_grey(high) / mean_grey(out)).log()), (out, high) if keep else None))
    return rows


train, val = scenes("lol-v1-train-full.txt", False), scenes("lol-v1-val.txt", True)
X, y = np.stack([r[0] for r in train]), np.array([r[1] for r in train])
Xv, yv = np.stack([r[0] for r in val]), np.array([r[1] for r in val])
mu, sd = X.mean(0), X.std(0) + 1e-6
A, Av = np.c_[(X - mu) / sd, np.ones(len(X))], np.c_[(Xv - mu) / sd, np.ones(len(Xv))]


def val_psnr(log_factors):
    return float(np.mean([float(psnr((r[2][0] * np.exp(k)).clamp(0, 1), r[2][1])) for r, k in zip(val, log_factors)]))


results = {"model": args.model, "train_images": len(train), "val_images": len(val),
           "log_level_error_std": {"train": float(y.std()), "val": float(yv.std())},
           "val_psnr": {"model": val_psnr(np.zeros(len(val))), "oracle factor": val_psnr(yv),
                        "train mean factor": val_psnr(np.full(len(val), y.mean()))}}
for lam in (10, 100, 1000, 10000):
    w = np.linalg.solve(A.T @ A + lam * np.diag([1.0] * X.shape[1] + [0.0]), A.T @ y)
    results["val_psnr"][f"ridge, lambda {lam}"] = val_psnr(Av @ w)
print(f"{args.model}: std of log(reference level / output level): train {y.std():.3f}, val {yv.std():.3f}")
print("| lol-v1-val, output times | PSNR |\n|---|---|")
for k, v in results["val_psnr"].items():
    print(f"| {k} | {v:.2f} |")
if args.out:
    open(args.out, "w").write(json.dumps(results, indent=2))
