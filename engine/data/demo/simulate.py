"""The demo subject's simulated experiment: who saw what when, and how each voxel responded.

Response model (one voxel ``v``, one trial showing image ``i`` in session ``s``, run ``r``)::

    beta = gain[v, s] * (baseline[v] + signal[v, i]) + offset[v, s] + drift[v, r] + shared[v] * g[trial] + e

    signal[v, i] = snr[v] * noise_sd[v] * ((1 - cw[v]) * L[v, i] + cw[v] * C[v, i])

- ``L``: low-level drive, the image's local energy summed under the voxel's Gaussian population receptive field,
  raised to a compressive exponent, standardised per ROI. The energy mixes luminance contrast with a chromatic part
  (per voxel): half colour contrast against the background, half the voxel's hue-tuned colour channel (one of 8
  cone-opponent hue directions, or light / dark), so what colours fill a receptive field is encoded, not only where
  colour edges are.
- ``C``: category drive, the voxel's tuning to the image's category times how much of the object falls in its
  (large) receptive field.
- ``cw``: 0 in V1/V2, small in V3/hV4, large in LO and VOT.
- Noise: per-session gain and offset (removed by per-session z-scoring), per-run drift, a noise component shared by
  all voxels on a trial, and independent trial noise; ``noise_sd`` is the SD of all within-session noise together.

The true noise ceiling follows from ``signal`` SD over the stimulus set and ``noise_sd``; the estimated one is
computed from the test repeats as NSD does (``estimate_noise_ceiling``). Both are correlations: the highest Pearson r
a perfect model can reach against the average of the test repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.demo.cortex import ROI_NAMES, AreaLayout, CorticalVoxels, retinotopy
from engine.data.demo.stimuli import CATEGORIES, StimulusSet

# Per ROI, in ROI_NAMES order (V1, V2, V3, hV4, LO, VOT).
ROI_SNR = (0.68, 0.6, 0.54, 0.46, 0.4, 0.36)  # median single-trial signal-to-noise ratio (NSD-like, see docs)
# The demo's default SNR, as a multiple of ROI_SNR. NSD's subject 1 has 27,000 training trials, the demo 2,000; a
# linear decoder's error from N trials at noise SD s equals that from k·N trials at s·sqrt(k), so sqrt(27,000 / 2,000)
# gives the demo's training set NSD's information. Its test trials are cleaner than NSD's too (docs/demo-subject.md).
DEMO_SNR_SCALE = 3.7
MAX_SNR_SCALE = 1000.0  # near noise-free: what a perfect measurement of the simulated voxels supports
ROI_CATEGORY_WEIGHT = (0.0, 0.0, 0.05, 0.2, 0.7, 0.9)
ROI_EXPONENT = (0.9, 0.75, 0.65, 0.55, 0.45, 0.4)  # compressive spatial summation
ROI_CONTRAST_WEIGHT = ((0.5, 0.9), (0.45, 0.85), (0.4, 0.8), (0.15, 0.5), (0.4, 0.8), (0.4, 0.8))  # vs colour
# Colour channels a voxel can be tuned to: 8 hue directions in the cone-opponent plane (red-green, blue-yellow),
# then light and dark (luminance increments / decrements). Share of voxels tuned to light or dark:
N_HUES = 8
COLOUR_CHANNELS = N_HUES + 2
LUMINANCE_TUNED = 0.2
# Category groups used to give tuning a realistic structure (shapes, man-made, plants, animate).
CATEGORY_GROUPS = {"circle": 0, "square": 0, "triangle": 0, "star": 0, "cross": 0, "ring": 0,
                   "house": 1, "car": 1, "tree": 2, "flower": 2, "fish": 3, "face": 3}


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the simulated experiment.

    Parameters
    ----------
    n_train_images, n_test_images : int
        Training images are shown once, test images ``test_repeats`` times, each repeat in a different session.
    n_sessions, runs_per_session : int
    image_size : int
        Stimulus height and width in pixels.
    n_voxels : int or None
        None: drawn per subject between 3,300 and 3,900 (subjects differ, like real ones).
    energy_grid : int
        Resolution of the image energy maps the receptive fields integrate over.
    snr_scale : float
        Multiplies every voxel's NSD-like single-trial signal-to-noise ratio (``ROI_SNR``). The default,
        ``DEMO_SNR_SCALE`` (3.7), gives the demo's 2,000 training trials the information of NSD's 27,000; 1 is NSD's
        single-trial level; lower values simulate a weaker signal (a 1.5 T scanner, shorter runs), where priors matter
        more. Up to ``MAX_SNR_SCALE``: at 1,000 a single trial's signal is 360–680 times its noise (ROI medians), so a
        decoder trained on such a subject shows what a perfect measurement of the simulated voxels supports.
    """

    n_train_images: int = 2000
    n_test_images: int = 100
    test_repeats: int = 3
    n_sessions: int = 8
    runs_per_session: int = 10
    image_size: int = 64
    n_voxels: int | None = None
    energy_grid: int = 32
    snr_scale: float = DEMO_SNR_SCALE

    def __post_init__(self) -> None:
        if not 0 < self.snr_scale <= MAX_SNR_SCALE:
            raise ValueError(f"snr_scale must be in (0, {MAX_SNR_SCALE:g}], got {self.snr_scale}")
        if self.test_repeats > self.n_sessions:
            raise ValueError(f"test_repeats ({self.test_repeats}) must be <= n_sessions ({self.n_sessions}): "
                             "each repeat of a test image is shown in a different session")
        if min(self.n_train_images, self.n_test_images, self.n_sessions, self.runs_per_session) < 1:
            raise ValueError("DemoConfig sizes must be >= 1")
        if self.energy_grid < 8 or self.energy_grid % 4 or self.image_size < self.energy_grid:
            raise ValueError(f"energy_grid must be a multiple of 4, >= 8 and <= image_size ({self.image_size}), "
                             f"got {self.energy_grid}")

    @property
    def n_images(self) -> int:
        return self.n_train_images + self.n_test_images


@dataclass(frozen=True)
class Schedule:
    """Trial order: arrays (n_trials,) int64, except ``split`` int8 (0 train, 1 test)."""

    image_index: np.ndarray
    session: np.ndarray
    run: np.ndarray
    repeat: np.ndarray
    split: np.ndarray


def make_schedule(config: DemoConfig, rng: np.random.Generator) -> Schedule:
    """Training images once, test images (the last ``n_test_images``) ``test_repeats`` times in distinct sessions."""
    c = config
    per_session: list[list[tuple[int, int]]] = [[] for _ in range(c.n_sessions)]  # (image, split)
    train = rng.permutation(c.n_train_images)
    for s, chunk in enumerate(np.array_split(train, c.n_sessions)):
        per_session[s].extend((int(i), 0) for i in chunk)
    load = np.zeros(c.n_sessions)
    for i in range(c.n_train_images, c.n_images):
        # The least loaded sessions (random tie-break) keep the test trials balanced across sessions.
        order = np.lexsort((rng.random(c.n_sessions), load))[: c.test_repeats]
        for s in order:
            per_session[s].append((i, 1))
            load[s] += 1
    image, session, run, split = [], [], [], []
    for s in range(c.n_sessions):
        trials = [per_session[s][k] for k in rng.permutation(len(per_session[s]))]
        for r, chunk in enumerate(np.array_split(np.arange(len(trials)), c.runs_per_session)):
            for k in chunk:
                image.append(trials[k][0])
                split.append(trials[k][1])
                session.append(s + 1)
                run.append(r + 1)
    image = np.asarray(image, np.int64)
    # Repeat number: order of presentation of each image.
    repeat = np.zeros(len(image), np.int64)
    seen: dict[int, int] = {}
    for t, i in enumerate(image):
        repeat[t] = seen.get(int(i), 0)
        seen[int(i)] = repeat[t] + 1
    return Schedule(image_index=image, session=np.asarray(session, np.int64), run=np.asarray(run, np.int64),
                    repeat=repeat, split=np.asarray(split, np.int8))


# ----------------------------------------------------------------------------------------------------------------------
# Image features


def image_energy(images: np.ndarray, grid: int, *, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Luminance-contrast and colour-contrast energy maps, each (n_images, grid, grid) float64.

    Luminance contrast: gradient magnitude of luminance. Colour contrast: summed absolute RGB difference from the
    image's background colour (median of its border pixels). Both averaged over each grid cell; row 0 is the top.
    """
    n, h, w, _ = images.shape
    hs, ws = h // grid, w // grid
    contrast = np.empty((n, grid, grid))
    colour = np.empty((n, grid, grid))
    for s in range(0, n, block):  # blocks keep the float temporaries in cache
        x = np.asarray(images[s : s + block], np.float32) / 255.0
        b = len(x)
        lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
        gx = np.zeros_like(lum)
        gy = np.zeros_like(lum)
        gx[:, :, 1:-1] = 0.5 * (lum[:, :, 2:] - lum[:, :, :-2])
        gy[:, 1:-1] = 0.5 * (lum[:, 2:] - lum[:, :-2])
        con = np.sqrt(gx * gx + gy * gy) * 4.0
        border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
        bg = np.median(border, axis=1)[:, None, None, :]
        col = np.abs(x - bg).sum(-1)
        contrast[s : s + b] = con[:, : hs * grid, : ws * grid].reshape(b, grid, hs, grid, ws).mean((2, 4))
        colour[s : s + b] = col[:, : hs * grid, : ws * grid].reshape(b, grid, hs, grid, ws).mean((2, 4))
    return contrast, colour


def colour_channels(images: np.ndarray, grid: int, *, block: int = 256) -> np.ndarray:
    """Hue-tuned colour maps, (n_images, COLOUR_CHANNELS, grid, grid) float32, averaged over each grid cell.

    Pixels go to a cone-opponent space (red−green ``R − G``, blue−yellow ``B − (R + G)/2``, luminance minus mid-grey);
    channel k < ``N_HUES`` is the half-wave rectified projection on hue direction ``2πk / N_HUES`` of the opponent
    plane, the last two are rectified luminance increments (light) and decrements (dark).
    """
    n, h, w, _ = images.shape
    hs, ws = h // grid, w // grid
    ang = 2 * np.pi * np.arange(N_HUES) / N_HUES
    proj = np.zeros((3, COLOUR_CHANNELS), np.float32)  # (rg, by, lum) → channel
    proj[0, :N_HUES], proj[1, :N_HUES] = np.cos(ang), np.sin(ang)
    proj[2, N_HUES], proj[2, N_HUES + 1] = 1.0, -1.0
    opp = np.array([[1, -0.5, 1 / 3], [-1, -0.5, 1 / 3], [0, 1, 1 / 3]], np.float32)  # RGB → (rg, by, lum)
    out = np.empty((n, COLOUR_CHANNELS, grid, grid), np.float32)
    for s in range(0, n, block):
        x = np.asarray(images[s : s + block, : hs * grid, : ws * grid], np.float32) / 255.0
        b = len(x)
        o = x @ opp
        o[..., 2] -= 0.5
        ch = np.maximum(o @ proj, 0.0)  # (b, H, W, channels)
        out[s : s + b] = ch.reshape(b, grid, hs, grid, ws, COLOUR_CHANNELS).mean((2, 4)).transpose(0, 3, 1, 2)
    return out


def object_overlap(stimuli: StimulusSet, x: np.ndarray, y: np.ndarray, size: np.ndarray) -> np.ndarray:
    """How much of each image's object falls in each receptive field, (n_images, n_voxels) float64 in [0, 1].

    The object is taken as a Gaussian blob (SD 0.6 × its radius) at its centre; the overlap with the voxel's
    Gaussian field has a closed form.
    """
    a = stimuli.attributes
    so2 = (0.6 * a["scale"].astype(np.float64))[:, None] ** 2
    s2 = (size.astype(np.float64) ** 2)[None, :]
    d2 = (a["x"].astype(np.float64)[:, None] - x[None, :]) ** 2 + (a["y"].astype(np.float64)[:, None] - y[None, :]) ** 2
    return so2 / (so2 + s2) * np.exp(-d2 / (2 * (so2 + s2)))


def prf_weights(x: np.ndarray, y: np.ndarray, size: np.ndarray, grid: int) -> np.ndarray:
    """Gaussian receptive fields on a ``grid × grid`` map of the image, (grid*grid, n_voxels) float64.

    Normalised over the whole visual field, not only the image, so a field that is half outside the image gets half
    the drive.
    """
    c = (np.arange(grid) + 0.5) / grid
    gx = np.tile(c, grid)[:, None]
    gy = np.repeat(c, grid)[:, None]
    s2 = (size.astype(np.float64) ** 2)[None, :]
    w = np.exp(-((gx - x[None, :]) ** 2 + (gy - y[None, :]) ** 2) / (2 * s2))
    w[w < 1e-6] = 0.0  # beyond ~5 SD; also keeps float32 products free of (very slow) subnormal numbers
    return w / (2 * np.pi * s2 * grid * grid)


# ----------------------------------------------------------------------------------------------------------------------
# Voxel parameters


def smooth_field(xy: np.ndarray, hemi: np.ndarray, rng: np.random.Generator, dims: int, *, n_centres: int = 30,
                 width: float = 12.0) -> np.ndarray:
    """A random field that varies smoothly over the flat map, (n_voxels, dims), unit SD per dimension.

    Sum of Gaussian bumps (``width`` mm) around random centres, each carrying a random vector.
    """
    out = np.zeros((len(xy), dims))
    for h in (0, 1):
        m = hemi == h
        if not m.any():
            continue
        centres = xy[m][rng.integers(0, m.sum(), n_centres)] + rng.normal(0, width, (n_centres, 2))
        vecs = rng.standard_normal((n_centres, dims))
        d2 = ((xy[m][:, None, :] - centres[None]) ** 2).sum(-1)
        out[m] = np.exp(-d2 / (2 * width**2)) @ vecs
    sd = out.std(0, keepdims=True)
    return out / np.where(sd > 0, sd, 1.0)


def category_tuning(vox: CorticalVoxels, rng: np.random.Generator) -> np.ndarray:
    """Each voxel's preference for each category, (n_voxels, n_categories), zero mean and unit SD per voxel.

    Spatially smooth (neighbouring voxels prefer similar categories), with shared preferences inside category groups.
    """
    n_cat = len(CATEGORIES)
    groups = np.array([CATEGORY_GROUPS[c] for c in CATEGORIES])
    group_field = smooth_field(vox.flat_xy.astype(np.float64), vox.hemi, rng, 4)
    cat_field = smooth_field(vox.flat_xy.astype(np.float64), vox.hemi, rng, n_cat)
    tun = 0.8 * group_field[:, groups] + 0.6 * cat_field + 0.4 * rng.standard_normal((len(vox.roi), n_cat))
    tun -= tun.mean(1, keepdims=True)
    return tun / tun.std(1, keepdims=True)


@dataclass(frozen=True)
class VoxelModel:
    """Generating parameters of every voxel, arrays (n_voxels,) float64 unless noted."""

    prf: dict[str, np.ndarray]  # x, y, ecc, angle, size
    exponent: np.ndarray
    contrast_weight: np.ndarray  # weight of luminance contrast (1 - weight: chromatic drive)
    colour_channel: np.ndarray  # (n_voxels,) int64: preferred colour channel (see colour_channels)
    category_weight: np.ndarray
    tuning: np.ndarray  # (n_voxels, n_categories)
    snr: np.ndarray  # target single-trial signal-to-noise ratio before receptive-field coverage
    noise_sd: np.ndarray
    baseline: np.ndarray
    shared_loading: np.ndarray  # fraction of noise SD shared by all voxels on a trial
    drift_fraction: np.ndarray  # fraction of noise SD that is per-run drift


def colour_preference(vox: CorticalVoxels, rng: np.random.Generator) -> np.ndarray:
    """Each voxel's preferred colour channel, (n_voxels,) int64 in [0, COLOUR_CHANNELS).

    Hue preference varies smoothly over the cortex (colour domains) with voxel scatter; ``LUMINANCE_TUNED`` of the
    voxels prefer light or dark instead.
    """
    field = smooth_field(vox.flat_xy.astype(np.float64), vox.hemi, rng, 2, n_centres=40, width=8.0)
    angle = np.arctan2(field[:, 1], field[:, 0]) + rng.normal(0, 0.4, len(vox.roi))
    hue = np.round(angle / (2 * np.pi) * N_HUES).astype(np.int64) % N_HUES
    lum = rng.random(len(vox.roi)) < LUMINANCE_TUNED
    return np.where(lum, N_HUES + rng.integers(0, 2, len(vox.roi)), hue)


def voxel_model(vox: CorticalVoxels, layout: AreaLayout, rng: np.random.Generator,
                colour_rng: np.random.Generator | None = None, *, snr_scale: float = 1.0) -> VoxelModel:
    """Draw every voxel's generating parameters from its ROI's ranges (``ROI_*`` tables) and its cortical position.

    ``colour_rng`` draws the colour preferences (its own stream, so adding them left the other parameters as they were).
    ``snr_scale`` multiplies the drawn SNRs after every draw, so the same seed gives the same voxels at any scale.
    """
    n = len(vox.roi)
    roi = vox.roi
    prf = retinotopy(vox, layout, rng)
    lo = np.array([ROI_CONTRAST_WEIGHT[k][0] for k in range(len(ROI_NAMES))])[roi]
    hi = np.array([ROI_CONTRAST_WEIGHT[k][1] for k in range(len(ROI_NAMES))])[roi]
    # Quantised to steps of 0.1.
    contrast_weight = np.round(rng.uniform(lo, hi) * 10) / 10
    snr_field = smooth_field(vox.flat_xy.astype(np.float64), vox.hemi, rng, 1, n_centres=40, width=15.0)[:, 0]
    snr = np.array(ROI_SNR)[roi] * np.exp(0.35 * snr_field + 0.35 * rng.standard_normal(n))
    return VoxelModel(
        prf={k: v.astype(np.float64) for k, v in prf.items()},
        exponent=np.array(ROI_EXPONENT)[roi] * np.exp(rng.normal(0, 0.05, n)),
        contrast_weight=contrast_weight,
        colour_channel=colour_preference(vox, colour_rng if colour_rng is not None else rng),
        category_weight=np.clip(np.array(ROI_CATEGORY_WEIGHT)[roi] + rng.normal(0, 0.05, n), 0, 1)
        * (np.array(ROI_CATEGORY_WEIGHT)[roi] > 0),
        tuning=category_tuning(vox, rng),
        snr=snr * snr_scale,
        noise_sd=2.0 * np.exp(rng.normal(0, 0.25, n)),
        baseline=np.abs(rng.normal(1.2, 0.6, n)),
        shared_loading=np.clip(rng.normal(0.35, 0.08, n), 0.1, 0.55),
        drift_fraction=np.clip(rng.normal(0.3, 0.05, n), 0.1, 0.45),
    )


def image_signals(model: VoxelModel, roi: np.ndarray, stimuli: StimulusSet, grid: int) -> np.ndarray:
    """Noise-free response of every voxel to every image, (n_images, n_voxels) float64 (signal part only)."""
    contrast, colour = image_energy(stimuli.images, grid)
    hues = colour_channels(stimuli.images, grid)
    # One scale for all channels, chosen so the chromatic halves are of similar size: the channel maps summed over
    # channels and halved average as much as the colour contrast.
    hues *= colour.mean() / max(float(hues.mean()) * COLOUR_CHANNELS / 2, 1e-12)
    n = contrast.shape[0]
    prf = model.prf
    drive = np.empty((n, len(roi)))
    # The costly step is images × grid cells × voxels. Voxels are grouped by the coarsest grid that still samples
    # their field (>= 1.2 cells per SD), so each group is a few float32 products: luminance contrast, colour contrast,
    # and one per preferred colour channel; the per-voxel mix is linear, applied after summation.
    level = np.full(len(roi), grid)
    for g in (grid // 2, grid // 4):
        if g >= 4:
            level[prf["size"] * g >= 1.2] = g
    wc = model.contrast_weight
    for g in np.unique(level):
        f = grid // g
        m = np.flatnonzero(level == g)
        w = prf_weights(prf["x"][m], prf["y"][m], prf["size"][m], g).astype(np.float32)
        con = contrast.reshape(n, g, f, g, f).mean((2, 4)).reshape(n, -1).astype(np.float32)
        col = colour.reshape(n, g, f, g, f).mean((2, 4)).reshape(n, -1).astype(np.float32)
        chroma = 0.5 * (col @ w).astype(np.float64)
        ch = model.colour_channel[m]
        for k in np.unique(ch):
            mk = np.flatnonzero(ch == k)
            hk = hues[:, k].reshape(n, g, f, g, f).mean((2, 4)).reshape(n, -1)
            chroma[:, mk] += 0.5 * (hk @ w[:, mk]).astype(np.float64)
        drive[:, m] = wc[m] * (con @ w).astype(np.float64) + (1 - wc[m]) * chroma
    low = np.maximum(drive, 0.0) ** model.exponent
    overlap = np.sqrt(object_overlap(stimuli, prf["x"], prf["y"], prf["size"]))
    cat = overlap * model.tuning[:, np.asarray(stimuli.labels)].T
    # Standardise per ROI (not per voxel), so voxels whose receptive field misses the images keep a weak signal.
    out = np.empty_like(low)
    for k in np.unique(roi):
        m = roi == k
        lz = (low[:, m] - low[:, m].mean(0)) / _ref_sd(low[:, m])
        cz = (cat[:, m] - cat[:, m].mean(0)) / _ref_sd(cat[:, m])
        cw = model.category_weight[m]
        out[:, m] = (1 - cw) * lz + cw * cz
    return out * (model.snr * model.noise_sd)


def _ref_sd(a: np.ndarray) -> float:
    """A robust ROI-level scale: the 80th percentile of the voxels' SDs over images."""
    sd = a.std(0)
    ref = float(np.percentile(sd, 80)) if sd.size else 1.0
    return ref if ref > 0 else 1.0


def simulate_betas(model: VoxelModel, signal: np.ndarray, schedule: Schedule, rng: np.random.Generator,
                   n_sessions: int) -> np.ndarray:
    """Single-trial betas (n_trials, n_voxels) float32 on a raw, GLM-like scale (percent signal change)."""
    n_trials, n_vox = len(schedule.image_index), signal.shape[1]
    sd = model.noise_sd
    runs = (schedule.session - 1) * (schedule.run.max()) + (schedule.run - 1)
    gain = np.exp(rng.normal(0, 0.08, (n_sessions, n_vox)))
    offset = rng.normal(0, 0.6, (n_sessions, n_vox)) * sd
    drift = rng.normal(0, 1.0, (int(runs.max()) + 1, n_vox)) * (model.drift_fraction * sd)
    shared = rng.normal(0, 1.0, (n_trials, 1)) * (model.shared_loading * sd)
    indep_sd = sd * np.sqrt(np.clip(1 - model.drift_fraction**2 - model.shared_loading**2, 0.05, 1))
    s = schedule.session - 1
    betas = gain[s] * (model.baseline + signal[schedule.image_index]) + offset[s] + drift[runs] + shared
    betas += rng.standard_normal((n_trials, n_vox)) * indep_sd
    return betas.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Noise ceilings


def noise_ceiling_from_ncsnr(ncsnr: np.ndarray, n_average: int) -> np.ndarray:
    """Noise ceiling as a correlation: ``sqrt(ncsnr² / (ncsnr² + 1/n))`` for responses averaged over n trials."""
    ncsnr = np.asarray(ncsnr, np.float64)
    return np.sqrt(ncsnr**2 / (ncsnr**2 + 1.0 / n_average))


def session_zscore(betas: np.ndarray, session: np.ndarray) -> np.ndarray:
    """Betas z-scored per voxel within each session, (n_trials, n_voxels) float64."""
    z = np.asarray(betas, np.float64).copy()
    session = np.asarray(session)
    for s in np.unique(session):
        m = session == s
        mu, sd = z[m].mean(0), z[m].std(0)
        z[m] = (z[m] - mu) / np.where(sd > 0, sd, 1.0)
    return z


def estimate_noise_ceiling(betas: np.ndarray, session: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise ceiling from repeated presentations, as NSD computes it (Allen et al. 2022).

    Betas are z-scored per voxel within each session; the noise variance is the mean over images of the variance
    across an image's repeats (ddof 1); signal variance is ``1 - noise variance`` (floored at 0);
    ``ncsnr = signal SD / noise SD``; the ceiling is given for the average of all repeats, as a correlation.

    Parameters
    ----------
    betas : (n_trials, n_voxels)
    session : (n_trials,) int
    groups : (n_images, n_repeats) int, trial indices per repeated image (-1 = missing), e.g. from
        ``Subject.repeat_groups("test")``.

    Returns
    -------
    noise_ceiling : (n_voxels,) float32 in [0, 1]
    ncsnr : (n_voxels,) float32
    """
    z = session_zscore(betas, session)
    full = groups[(groups >= 0).sum(1) >= 2]
    var = []
    for g in full:
        g = g[g >= 0]
        var.append(z[g].var(0, ddof=1))
    noise_var = np.mean(var, axis=0)
    ncsnr = np.sqrt(np.clip(1.0 - noise_var, 0.0, None)) / np.sqrt(noise_var)
    n_avg = int(groups.shape[1])
    return noise_ceiling_from_ncsnr(ncsnr, n_avg).astype(np.float32), ncsnr.astype(np.float32)
