"""Your own small dataset, no Stable Diffusion: a simulated subject seeing scikit-learn's 8×8 digits (upsampled to
28 px), exported as a flattened column-major MATLAB file and imported through the real mapping path, then

- ``pixel-ridge`` (voxels → pixels) against a plain numpy ridge on the same split (same alphas, 5-fold CV per pixel);
- ``pixel-ridge`` through an image basis: the first ``--pca-components`` principal components of the training stimuli
  and prior images (``data.pixel_basis=pca``), and Miyawaki et al. 2008's multi-scale local decoders
  (``data.pixel_basis=multiscale``); not part of the timed flow;
- the generator route: ``generator train`` on the training stimuli + the unused digits as prior images, a ridge onto
  its embedding (``demo-ridge --set data.embedder=GEN``), ``finetune --generator GEN``, ``reconstruct``;
- both scored by ``evaluate`` (native 28 px protocol: PixCorr, SSIM, n-way and 2-way pixel identification);
- the wall time of every step of import → train → generator → finetune → reconstruct → evaluate.

Writes the pictures (ground truth, pixel-ridge and its PCA and multi-scale variants, generator samples) to
``docs/images/own-digits-*.png`` (or ``--pictures DIR``).

    OMP_NUM_THREADS=1 python benchmarks/bench_own_images.py [--images 600] [--steps 800] [--keep DIR]
    OMP_NUM_THREADS=1 python benchmarks/bench_own_images.py --pixel-only     # the pixel decoders alone (minutes)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.results_io import report  # noqa: E402

SIZE = 28


def digits(n_stimuli: int):
    """(stimuli uint8 (n, 28, 28), labels, prior uint8 (m, 28, 28)): sklearn's digits, bicubic-upsampled."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images / 16.0 * 255).astype(np.uint8)
    up = np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.BICUBIC)) for im in imgs])
    return up[:n_stimuli], d.target[:n_stimuli], up[n_stimuli:]


def rows_f(images: np.ndarray) -> np.ndarray:
    """MATLAB ``reshape(img, 1, [])``: column-major rows in [0, 1]."""
    return np.stack([im.reshape(-1, order="F") for im in images]).astype(np.float64) / 255.0


def export_matlab(sim, prior: np.ndarray, folder: Path) -> Path:
    """The simulated subject as a course would ship it: betas, flattened grey images (F order), 1-based indices."""
    import scipy.io

    tr, te = sim.split_indices("train"), sim.split_indices("test")
    ii = np.asarray(sim.trials.image_index)
    imgs = np.asarray(sim.images)[..., 0]
    scipy.io.savemat(folder / "digits.mat", {
        "X_train": np.asarray(sim.betas)[tr], "X_test": np.asarray(sim.betas)[te],
        "stim": rows_f(imgs), "idx_train": ii[tr] + 1.0, "idx_test": ii[te] + 1.0,
        "labels": np.asarray(sim.stimuli.labels, np.float64), "unlabeled": rows_f(prior)})
    (folder / "digits.yaml").write_text(
        "version: 1\nfile: digits.mat\nname: digits\n"
        "betas: {train: X_train, test: X_test}\n"
        f"images: {{all: stim, shape: [{SIZE}, {SIZE}], order: F}}\n"
        "trials: {train_image_index: idx_train, test_image_index: idx_test, index_base: 1}\n"
        "labels: labels\ncategories: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']\n"
        f"prior_images: {{all: unlabeled, shape: [{SIZE}, {SIZE}], order: F}}\n")
    return folder / "digits.yaml"


def numpy_ridge(subject, alphas, cv: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A plain numpy ridge, voxels → pixels, per-pixel alpha by K-fold CV; returns (test image rows, predictions)."""
    x = np.asarray(subject.betas, np.float64)
    tr = subject.split_indices("train")
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
    x = (x - mu) / sd
    y = np.asarray(subject.images)[np.asarray(subject.trials.image_index)[tr]][..., 0].reshape(len(tr), -1) / 255.0
    xt = x[tr]
    folds = np.array_split(np.random.default_rng(0).permutation(len(tr)), cv)
    err = np.zeros((len(alphas), y.shape[1]))
    for f in folds:
        m = np.setdiff1d(np.arange(len(tr)), f)
        xm, ym = xt[m] - xt[m].mean(0), y[m] - y[m].mean(0)
        u, s, vt = np.linalg.svd(xm, full_matrices=False)
        uty = u.T @ ym
        xv = (xt[f] - xt[m].mean(0)) @ vt.T
        for a, alpha in enumerate(alphas):
            pred = xv @ ((s / (s ** 2 + alpha))[:, None] * uty) + y[m].mean(0)
            err[a] += ((pred - y[f]) ** 2).sum(0)
    best = np.asarray(alphas)[err.argmin(0)]
    xc, yc = xt - xt.mean(0), y - y.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    imgs, groups = subject.repeat_groups("test")
    xte = np.stack([x[g[g >= 0]].mean(0) for g in groups]) - xt.mean(0)
    proj = xte @ vt.T
    pred = np.empty((len(imgs), y.shape[1]))
    for alpha in np.unique(best):
        cols = best == alpha
        pred[:, cols] = proj @ ((s / (s ** 2 + alpha))[:, None] * uty[:, cols]) + y.mean(0)[cols]
    return imgs, np.clip(pred, 0, 1)


def pixcorr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(len(a))]))


def grid_png(rows: list[tuple[str, np.ndarray]], path: Path, scale: int = 3) -> None:
    """One labelled row of images per method, grey, enlarged ``scale``× (nearest) so the pixels stay visible."""
    from PIL import Image, ImageDraw

    n = len(rows[0][1])
    cell = SIZE * scale + 4
    label_w = 110
    canvas = Image.new("L", (label_w + n * cell, len(rows) * cell), 255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, imgs) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 6), name, fill=0)
        for i, im in enumerate(imgs):
            tile = Image.fromarray(np.asarray(im)[..., 0] if np.asarray(im).ndim == 3 else np.asarray(im))
            canvas.paste(tile.resize((SIZE * scale, SIZE * scale), Image.NEAREST),
                         (label_w + i * cell + 2, r * cell + 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600, help="digits shown (the rest are the prior images)")
    ap.add_argument("--steps", type=int, default=800, help="generator training steps")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--pca-components", type=int, default=64, help="K of the pixel-ridge PCA row")
    ap.add_argument("--pixel-only", action="store_true",
                    help="only the pixel decoders (pixel-ridge, PCA, multi-scale) and the numpy reference: no generator")
    ap.add_argument("--snr-scale", type=float, default=1.0,
                    help="the simulated subject's signal-to-noise scale (demo create --snr-scale; 1 = NSD's "
                         "single-trial level, as these results were recorded; the demo subject's default is 3.7)")
    ap.add_argument("--pictures", default=str(ROOT / "docs" / "images"), help="folder for the picture grids")
    return ap.parse_args()


def prepare_work(keep: str | None) -> Path:
    """The work folder (``--keep`` or a temporary one), without the outputs of an earlier run."""
    work = Path(keep or tempfile.mkdtemp(prefix="bench-own-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in ("pr", "pr-rec", "gr", "gr-rec", "gen", "gen.resume", "digits.nlsubj", "pca", "pca-rec", "ms",
                "ms-rec"):
        shutil.rmtree(work / old, ignore_errors=True)  # a kept work folder from an earlier run
    return work


def cli_runner(env: dict, times: dict[str, float]):
    """``cli(name, *argv)``: one ``neurolens`` command in a subprocess, its wall time recorded as ``times[name]``."""

    def cli(name: str, *argv: str) -> None:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "engine.cli.main", *argv], check=True, env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        times[name] = round(time.perf_counter() - t0, 1)

    return cli


def simulate_digits_subject(work: Path, n_images: int, snr_scale: float) -> Path:
    """A simulated subject seeing the digits, exported as a course would ship it; returns its mapping file."""
    from engine.data.demo.builder import create_demo_subject
    from engine.data.demo.own_stimuli import OwnStimuli
    from engine.data.demo.simulate import DemoConfig
    from engine.data.native import read_native

    stim, labels, prior = digits(n_images)
    sim_path = work / "sim.nlsubj"
    shutil.rmtree(sim_path, ignore_errors=True)
    create_demo_subject(sim_path, stimuli=OwnStimuli(np.repeat(stim[..., None], 3, -1), labels,
                                                     [str(k) for k in range(10)], "sklearn digits (28 px)"),
                        config=DemoConfig(snr_scale=snr_scale))
    sim = read_native(sim_path)
    return export_matlab(sim, prior, work)


def run_timed_flow(cli, work: Path, mapping: Path, subj: Path, args, times: dict[str, float]) -> tuple[dict, float]:
    """import → train → (generator → finetune →) reconstruct → evaluate, timed; returns ({"pr", "gr"}: evaluation
    results, the flow's wall time)."""
    from engine.evaluate import evaluate_folder

    t_flow = time.perf_counter()
    cli("import", "import", str(mapping), "--out", str(subj), "--overwrite")
    cli("train pixel-ridge", "train", "--data", str(subj), "--preset", "pixel-ridge", "--out", str(work / "pr"))
    cli("reconstruct pixel-ridge", "reconstruct", str(work / "pr"), "--out", str(work / "pr-rec"))
    if not args.pixel_only:
        generator_flow(cli, work, subj, args.steps)
    t0 = time.perf_counter()
    res_pr = evaluate_folder(work / "pr-rec", features=[])
    res_gr = None if args.pixel_only else evaluate_folder(work / "gr-rec", features=[])
    times["evaluate"] = round(time.perf_counter() - t0, 1)
    return {"pr": res_pr, "gr": res_gr}, time.perf_counter() - t_flow


def run_untimed_decoders(cli, work: Path, subj: Path, args) -> dict:
    """The runs outside the timed flow: the generator route from its low-level image, pixel-ridge through the PCA
    and multi-scale bases; returns {"gr5", "pca", "ms"}: evaluation results (gr5 None with ``--pixel-only``)."""
    from engine.evaluate import evaluate_folder

    res = {"gr5": None}
    if not args.pixel_only:
        # not part of the timed flow: the same route started from its low-level image (img2img, strength 0.5)
        cli("reconstruct generator route img2img 0.5", "reconstruct", str(work / "gr"), "--out",
            str(work / "gr-rec5"), "--samples", "4", "--img2img-strength", "0.5", "--device", "cpu")
        res["gr5"] = evaluate_folder(work / "gr-rec5", features=[])
    # pixel-ridge through an image basis (also outside the timed flow)
    basis_runs = {"pca": ("data.pixel_basis=pca", f"data.pca_components={args.pca_components}"),
                  "ms": ("data.pixel_basis=multiscale",)}
    for name, sets in basis_runs.items():
        cli(f"train pixel-ridge {name}", "train", "--data", str(subj), "--preset", "pixel-ridge", "--out",
            str(work / name), *[a for kv in sets for a in ("--set", kv)])
        cli(f"reconstruct pixel-ridge {name}", "reconstruct", str(work / name), "--out", str(work / f"{name}-rec"))
        res[name] = evaluate_folder(work / f"{name}-rec", features=[])
    return res


def score_row(res, images: str, nway: str) -> dict:
    """PixCorr, SSIM, n-way and 2-way pixel identification (and the protocol) of one image set of an evaluation."""
    r = next(r for r in res.rows if r["images"] == images)
    return {k: round(float(r[k]), 4) for k in ("PixCorr", "SSIM", nway, "2-way pixels")} | {
        "protocol": r["protocol"]}


def same_calc_pixcorr(s, work: Path) -> tuple[float, float]:
    """PixCorr of a plain numpy ridge on the same split and of pixel-ridge's reconstructions, by the same code."""
    from engine.evaluate import load_png
    from engine.recon.index import read_index

    # reference: a plain numpy ridge on the same split
    imgs, ref = numpy_ridge(s, [float(10.0 ** k) for k in np.arange(-1.0, 7.5, 0.5)])
    gt = np.asarray(s.images)[imgs][..., 0].reshape(len(imgs), -1) / 255.0
    idx = read_index(work / "pr-rec")

    mine = np.stack([load_png(idx.path, it.samples[0])[..., 0] for it in idx.items]).reshape(len(imgs), -1) / 255.0
    return pixcorr(ref, gt), pixcorr(mine, gt)


def pixel_result(s, work: Path, evaluated: dict, args, times: dict, machine: str) -> dict:
    """The record of the pixel decoders (and the subject, the machine, the step times)."""
    n_test = len(s.split_images("test"))
    nway = f"{n_test}-way pixels"
    ref_pc, mine_pc = same_calc_pixcorr(s, work)
    return {
        "benchmark": "own_images", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "subject": {"n_trials": s.n_trials, "n_voxels": s.n_voxels, "image_size": SIZE, "n_test_images": n_test,
                    "n_prior_images": int(s.prior_images.shape[0]), "snr_scale": args.snr_scale},
        "pixel_ridge": score_row(evaluated["pr"], "samples", nway),
        f"pixel_ridge_pca_{args.pca_components}": score_row(evaluated["pca"], "samples", nway),
        "pixel_ridge_multiscale": score_row(evaluated["ms"], "samples", nway),
        "numpy_ridge_pixcorr": round(ref_pc, 4), "pixel_ridge_pixcorr_same_calc": round(mine_pc, 4),
        "goals": {"pixel-ridge matches numpy ridge (±0.01)": abs(mine_pc - ref_pc) <= 0.01},
        "times_s": times,
    }


def add_generator_result(result: dict, evaluated: dict, flow_s: float) -> None:
    """The generator route's rows and goals, against pixel-ridge's, added to ``result``."""
    pr = result["pixel_ridge"]
    nway = f"{result['subject']['n_test_images']}-way pixels"
    gr_mean = score_row(evaluated["gr"], "samples mean (k=4)", nway)
    gr5 = score_row(evaluated["gr5"], "samples mean (k=4)", nway)
    result.update({"generator_route_samples": gr_mean, "generator_route_img2img_0.5": gr5,
                   "generator_route_blurry (principal-component decode)": score_row(evaluated["gr"], "blurry", nway),
                   "flow_s": round(flow_s, 1)})
    result["goals"].update({
        "generator beats pixel-ridge by >= 0.05 PixCorr": max(gr_mean["PixCorr"], gr5["PixCorr"]) - pr["PixCorr"]
        >= 0.05, "generator beats pixel-ridge on n-way": max(gr_mean[nway], gr5[nway]) > pr[nway],
        "flow <= 600 s": flow_s <= 600})


def pixel_pictures(work: Path, pca_components: int, pictures: Path) -> tuple[list, list[int]]:
    """The pixel-bases grid (the first 12 test images); returns its first two rows (ground truth, pixel-ridge) and
    the images shown, for the generator's grids."""
    from engine.evaluate import load_png
    from engine.recon.index import read_index

    idx = read_index(work / "pr-rec")
    sel = list(range(min(12, len(idx.items))))
    rows = [("ground truth", [load_png(idx.path, idx.items[i].ground_truth) for i in sel]),
            ("pixel-ridge", [load_png(idx.path, idx.items[i].samples[0]) for i in sel])]
    bases = list(rows)
    for name, label in (("pca", f"PCA K={pca_components}"), ("ms", "multiscale")):
        bidx = read_index(work / f"{name}-rec")
        bases.append((label, [load_png(bidx.path, bidx.items[i].samples[0]) for i in sel]))
    grid_png(bases, pictures / "own-digits-pixel-bases.png")
    return rows, sel


def main() -> None:
    args = parse_args()
    work = prepare_work(args.keep)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "NEUROLENS_CACHE_DIR": str(work / "cache")}
    times: dict[str, float] = {}
    cli = cli_runner(env, times)
    mapping = simulate_digits_subject(work, args.images, args.snr_scale)

    load0 = os.getloadavg()[0]
    subj = work / "digits.nlsubj"
    evaluated, flow_s = run_timed_flow(cli, work, mapping, subj, args, times)
    evaluated.update(run_untimed_decoders(cli, work, subj, args))

    from engine.data.native import read_native

    machine = (f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, load average at start "
               f"{load0:.1f} (other jobs on the machine)")
    result = pixel_result(read_native(subj), work, evaluated, args, times, machine)
    if not args.pixel_only:
        add_generator_result(result, evaluated, flow_s)
    # pictures: the first 12 test images
    pictures = Path(args.pictures)
    rows, sel = pixel_pictures(work, args.pca_components, pictures)
    if not args.pixel_only:
        generator_pictures(work, rows, sel, pictures)
    snr = "" if args.snr_scale == 1 else f"_snr{args.snr_scale:g}"
    report(result, ("own_images_pixels" if args.pixel_only else "own_images") + snr)  # a partial run keeps the full record


def generator_flow(cli, work: Path, subj: Path, steps: int) -> None:
    """generator train → a ridge onto its embedding → finetune → reconstruct (4 samples per image)."""
    gen = work / "gen"
    cli("generator train", "generator", "train", "--data", str(subj), "--out", str(gen), "--steps", str(steps),
        "--overwrite")
    cli("train generator route", "train", "--data", str(subj), "--preset", "demo-ridge", "--set",
        f"data.embedder={gen}", "--out", str(work / "gr"))
    cli("finetune", "finetune", str(work / "gr"), "--generator", str(gen), "--device", "cpu")
    cli("reconstruct generator route", "reconstruct", str(work / "gr"), "--out", str(work / "gr-rec"),
        "--samples", "4", "--device", "cpu")


def generator_pictures(work: Path, rows: list, sel: list[int], pictures: Path) -> None:
    from engine.evaluate import load_png
    from engine.recon.index import read_index

    gidx, gidx5 = read_index(work / "gr-rec"), read_index(work / "gr-rec5")
    rows = list(rows)
    rows.append(("PC decode", [load_png(gidx.path, gidx.items[i].blurry) for i in sel]))
    for k in range(2):
        rows.append((f"generator s{k}", [load_png(gidx.path, gidx.items[i].samples[k]) for i in sel]))
    rows.append(("gen. img2img .5", [load_png(gidx5.path, gidx5.items[i].samples[0]) for i in sel]))
    grid_png(rows, pictures / "own-digits-reconstructions.png")
    samples = [load_png(gidx.path, gidx.items[i].samples[k]) for k in range(4) for i in sel[:6]]
    grid_png([("generator", samples[:12]), ("(more)", samples[12:24])], pictures / "own-digits-generator-samples.png")

if __name__ == "__main__":
    main()
