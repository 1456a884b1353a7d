"""Low-level image metrics as MindEyeV2 computes them: PixCorr, SSIM, plus MSE and PSNR.

Protocol (``metrics.md`` §1–2, §7): every ground-truth and reconstructed image is first resized to 256×256 floats in
[0, 1] (``prepare_images``); PixCorr and SSIM then resize both to 425×425 (bilinear) and compare:

- PixCorr: Pearson r over all flattened RGB values of one pair.
- SSIM: grey (``skimage.color.rgb2gray`` weights 0.2125/0.7154/0.0721), Gaussian-weighted window (sigma 1.5, truncate
  3.5, 11 taps, reflect borders), population covariance (``use_sample_covariance=False``), ``data_range=1.0``, mean
  over the map cropped by the 5-pixel window radius: the same numbers as ``skimage.metrics.structural_similarity``,
  computed for a batch in one call.
- MSE / PSNR: at the 256×256 evaluation resolution, RGB, data range 1.

Both are computed without building the 425² RGB images (resizing is linear: SSIM resizes the grey image; PixCorr uses
the banded ``RᵀR`` identity, see ``pixcorr_ssim``), which gives the same numbers to ~1e-13 at a fraction of the cost.

Resizing is antialiased bilinear with half-pixel centres (the PIL / ``torch.nn.functional.interpolate(antialias=True)``
filter, which torchvision's ``Resize`` uses); for upsampling (256 → 425) this is plain bilinear.

Shapes: images are ``(n_images, H, W, 3)``, uint8 (0–255) or float (0–1). Every metric returns ``(n_images,)``.
"""

from __future__ import annotations

import numpy as np

EVAL_SIZE = 256  # MindEyeV2: every image goes to 256×256 first
LOWLEVEL_SIZE = 425  # PixCorr and SSIM are computed at 425×425 (brain-diffuser's stimulus size)
GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # skimage's choice for gaussian_weights=True: an 11-tap window at sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
_CHUNK = 16  # images per chunk: bounds memory at 425² float64 (16 × 425² × 8 B ≈ 23 MB per map)


def to_float(images) -> np.ndarray:
    """Images as float64 in [0, 1]: uint8 is divided by 255, floats are taken as they are."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64, copy=False)


def _resample_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights ``(n_out, n_taps)`` of antialiased bilinear resampling along one axis.

    The triangle filter is stretched by the scale factor when shrinking (antialiasing) and clipped to the image at the
    borders, its weights renormalised: PIL's and PyTorch's ``antialias=True`` bilinear.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    inv = 1.0 / support
    centre = scale * (np.arange(n_out) + 0.5)
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    n_taps = int((hi - lo).max())
    j = lo[:, None] + np.arange(n_taps)[None, :]
    w = np.clip(1.0 - np.abs((j - centre[:, None] + 0.5) * inv), 0.0, None)
    w[j >= hi[:, None]] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return np.minimum(j, n_in - 1), w


def resize(images, size: int | tuple[int, int], dtype=np.float64) -> np.ndarray:
    """Resize a batch ``(n, H, W, C)`` to ``(n, size, size, C)`` floats with antialiased bilinear filtering.

    Parameters
    ----------
    images : array (n_images, H, W, C), uint8 or float in [0, 1]
    size : int or (height, width)
    dtype : numpy float type of the result (computed in float64; float32 storage halves the memory traffic)
    """
    x = to_float(images)
    h_out, w_out = (size, size) if isinstance(size, (int, np.integer)) else size
    if x.shape[1] == h_out and x.shape[2] == w_out:
        return x.astype(dtype, copy=False)
    try:
        import torch
    except ImportError:  # the numpy path below computes the same filter, about 10× slower
        torch = None
    if torch is not None:
        # float64 throughout: torch's float32 kernels place the taps with ~3e-5 error in pixel values.
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).permute(0, 3, 1, 2).contiguous()
        # When only enlarging, the antialiased filter is plain bilinear; torch's non-antialiased kernel is faster.
        shrink = h_out < x.shape[1] or w_out < x.shape[2]
        t = torch.nn.functional.interpolate(t, size=(h_out, w_out), mode="bilinear", align_corners=False,
                                            antialias=shrink)
        return t.permute(0, 2, 3, 1).numpy().astype(dtype, copy=False)
    return resize_numpy(x, (h_out, w_out)).astype(dtype, copy=False)


def resize_numpy(images, size: tuple[int, int]) -> np.ndarray:
    """``resize`` without torch: separable gathers of the filter taps (same numbers, slower)."""
    x = to_float(images)
    h_out, w_out = size
    if x.shape[1] != h_out:
        idx, w = _resample_taps(x.shape[1], h_out)
        x = _sum_taps(x, idx, w, 1)
    if x.shape[2] != w_out:
        idx, w = _resample_taps(x.shape[2], w_out)
        x = _sum_taps(x, idx, w, 2)
    return x


def _sum_taps(x: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    out = None
    for k in range(idx.shape[1]):
        shape = [1] * x.ndim
        shape[axis] = idx.shape[0]
        term = np.take(x, idx[:, k], axis=axis) * w[:, k].reshape(shape)
        out = term if out is None else out + term
    return out


def prepare_images(images, size: int = EVAL_SIZE) -> np.ndarray:
    """The protocol's first step: ``(n, H, W, 3)`` → ``(n, 256, 256, 3)`` float32 in [0, 1]."""
    x = np.asarray(images)
    out = np.empty((x.shape[0], size, size, x.shape[-1]), np.float32)
    for s in range(0, x.shape[0], _CHUNK):
        out[s : s + _CHUNK] = resize(x[s : s + _CHUNK], size)
    return out


def _check_pair(gt, recon) -> tuple[np.ndarray, np.ndarray]:
    gt, recon = np.asarray(gt), np.asarray(recon)
    if gt.ndim == 3:
        gt, recon = gt[None], recon[None]
    if gt.shape[0] != recon.shape[0] or gt.ndim != 4 or recon.ndim != 4:
        raise ValueError(f"expected two (n_images, H, W, 3) batches of equal n, got {gt.shape} and {recon.shape}")
    return gt, recon


def pixcorr(gt, recon, *, size: int = LOWLEVEL_SIZE) -> np.ndarray:
    """PixCorr per image: Pearson r of all RGB values of ``recon[i]`` and ``gt[i]`` after resizing to ``size``.

    Parameters
    ----------
    gt, recon : arrays (n_images, H, W, 3), prepared at 256×256 (``prepare_images``)

    Returns
    -------
    (n_images,) float64
    """
    return pixcorr_ssim(gt, recon, size=size, which=("PixCorr",))["PixCorr"]


def pixcorr_ssim(gt, recon, *, size: int = LOWLEVEL_SIZE, which=("PixCorr", "SSIM")) -> dict[str, np.ndarray]:
    """PixCorr and SSIM at ``size`` without materialising the RGB images at ``size``.

    Resizing is linear, so (i) the grey image of the resized RGB image is the resized grey image: SSIM resizes one
    channel instead of three; (ii) with the per-axis resampling matrices ``R_h``, ``R_w``, the sums PixCorr needs
    (``Σa``, ``Σb``, ``Σa²``, ``Σb²``, ``Σab`` over the 425² × 3 values) follow from the 256² images and the banded
    matrices ``RᵀR`` (``Σab = Σ_c <X_c, R_hᵀR_h Y_c R_wᵀR_w>``). Same numbers as resizing first (to rounding,
    ~1e-12), a fraction of the memory traffic. Everything is float64.

    Returns
    -------
    dict "PixCorr" / "SSIM" -> (n_images,) float64
    """
    gt, recon = _check_pair(gt, recon)
    out = {k: np.empty(gt.shape[0]) for k in which}
    for s in range(0, gt.shape[0], _CHUNK):
        x, y = to_float(gt[s : s + _CHUNK]), to_float(recon[s : s + _CHUNK])
        if "PixCorr" in out:
            out["PixCorr"][s : s + _CHUNK] = _resized_pearson(x, y, size)
        if "SSIM" in out:
            a = resize(rgb_to_grey(x)[..., None], size)[..., 0]
            b = resize(rgb_to_grey(y)[..., None], size)[..., 0]
            # MindEyeV2 calls skimage with (recon, gt); SSIM is symmetric, the order does not change the value.
            out["SSIM"][s : s + _CHUNK] = ssim_grey(b, a)
    return out


def _resample_gram(n_in: int, n_out: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """``RᵀR`` of the resampling matrix ``R (n_out, n_in)`` as its non-zero diagonals {offset: values}, and ``Rᵀ1``."""
    idx, w = _resample_taps(n_in, n_out)
    r = np.zeros((n_out, n_in))
    np.add.at(r, (np.repeat(np.arange(n_out), idx.shape[1]), idx.ravel()), w.ravel())
    g = r.T @ r
    diags = {d: np.diagonal(g, d).copy() for d in range(-(n_in - 1), n_in) if np.any(np.diagonal(g, d))}
    return diags, r.sum(axis=0)


def _banded(z: np.ndarray, diags: dict[int, np.ndarray], axis: int) -> np.ndarray:
    """``M @ z`` along ``axis`` for a banded symmetric ``M`` given by its diagonals (shifted multiply-adds)."""
    out = np.zeros_like(z)
    n = z.shape[axis]
    shape = [1] * z.ndim
    for d, v in diags.items():
        shape[axis] = len(v)
        v = v.reshape(shape)
        dst = [slice(None)] * z.ndim
        src = [slice(None)] * z.ndim
        dst[axis], src[axis] = (slice(0, n - d), slice(d, n)) if d >= 0 else (slice(-d, n), slice(0, n + d))
        out[tuple(dst)] += v * z[tuple(src)]
    return out


def _resized_pearson(x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Pearson r of ``resize(x[i], size)`` and ``resize(y[i], size)`` over all RGB values, from (n, H, W, C) floats."""
    n, h, w, c = x.shape
    mh, uh = _resample_gram(h, size)
    mw, uw = _resample_gram(w, size)

    def sandwich(z):  # M_h Z M_w for every image and channel (M is symmetric)
        return _banded(_banded(z, mh, 1), mw, 2).reshape(n, -1)

    xf, yf = x.reshape(n, -1), y.reshape(n, -1)
    q = sandwich(y)
    sxy = np.einsum("ij,ij->i", xf, q)
    syy = np.einsum("ij,ij->i", yf, q)
    sxx = np.einsum("ij,ij->i", xf, sandwich(x))
    weights = np.einsum("h,w->hw", uh, uw)  # a sum over resized pixels = a weighted sum over input pixels
    sx = np.einsum("nhwc,hw->n", x, weights)
    sy = np.einsum("nhwc,hw->n", y, weights)
    m = size * size * c
    cov = sxy - sx * sy / m
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt((sxx - sx * sx / m) * (syy - sy * sy / m))


def rgb_to_grey(images) -> np.ndarray:
    """``skimage.color.rgb2gray``: ``(n, H, W, 3)`` → ``(n, H, W)`` with weights 0.2125, 0.7154, 0.0721."""
    return to_float(images) @ GREY_WEIGHTS


def gaussian_kernel(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """The normalised 1-D Gaussian that ``scipy.ndimage.gaussian_filter`` (and so skimage's SSIM) uses."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 / sigma**2 * x**2)
    return k / k.sum()


def ssim_grey(a, b, *, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Mean SSIM of each pair of grey images ``(n, H, W)``, Gaussian-weighted with population covariance.

    Equals ``skimage.metrics.structural_similarity(a[i], b[i], gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, data_range=data_range)`` for every ``i``. The five local moments of a few images
    of each pair are filtered with the separable 11-tap kernel and combined on the cropped region only.
    """
    from scipy.ndimage import correlate1d

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim == 2:
        a, b = a[None], b[None]
    kernel = gaussian_kernel(sigma)
    pad = (len(kernel) - 1) // 2
    if a.shape != b.shape or min(a.shape[-2:]) < len(kernel):
        raise ValueError(f"SSIM needs two equal stacks of images of at least {len(kernel)}×{len(kernel)} pixels, "
                         f"got {a.shape} and {b.shape}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    out = np.empty(a.shape[0])
    # One image at a time: scipy's 1-D filter is fastest on contiguous 2-D arrays, and five 425² moments stay in
    # cache. Buffers are reused across images.
    shape = a.shape[1:]
    tmp, mom = np.empty(shape), np.empty((5, *shape))
    crop = (slice(pad, -pad), slice(pad, -pad))
    for i in range(a.shape[0]):
        x, y = np.ascontiguousarray(a[i]), np.ascontiguousarray(b[i])
        for j, src in enumerate((x, y, x * x, y * y, x * y)):
            # 'reflect' = half-sample symmetric borders, as skimage passes to its Gaussian filter
            correlate1d(src, kernel, axis=0, mode="reflect", output=tmp)
            correlate1d(tmp, kernel, axis=1, mode="reflect", output=mom[j])
        ux, uy, uxx, uyy, uxy = (m[crop] for m in mom)  # only the cropped map is averaged
        uxuy = ux * uy
        ux2 = ux * ux
        uy2 = uy * uy
        num = (2.0 * uxuy + c1) * (2.0 * (uxy - uxuy) + c2)
        den = (ux2 + uy2 + c1) * ((uxx - ux2) + (uyy - uy2) + c2)
        out[i] = (num / den).mean()
    return out


def ssim(gt, recon, *, size: int = LOWLEVEL_SIZE) -> np.ndarray:
    """SSIM per image as MindEyeV2: resize to ``size`` (bilinear), ``rgb2gray``, Gaussian SSIM, data range 1.

    Parameters
    ----------
    gt, recon : arrays (n_images, H, W, 3), prepared at 256×256

    Returns
    -------
    (n_images,) float64
    """
    return pixcorr_ssim(gt, recon, size=size, which=("SSIM",))["SSIM"]


def mse(gt, recon) -> np.ndarray:
    """Mean squared error per image over all RGB values in [0, 1], at the resolution given (256 in the protocol)."""
    gt, recon = _check_pair(gt, recon)
    out = np.empty(gt.shape[0])
    for s in range(0, gt.shape[0], _CHUNK):
        d = to_float(gt[s : s + _CHUNK]) - to_float(recon[s : s + _CHUNK])
        out[s : s + _CHUNK] = (d * d).reshape(d.shape[0], -1).mean(axis=1)
    return out


def psnr(gt, recon, *, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per image: ``10·log10(data_range² / MSE)``; ``inf`` for identical images."""
    m = mse(gt, recon)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / m)


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of exact area resampling along one axis: output cell i averages the input over
    ``[i·n_in/n_out, (i+1)·n_in/n_out)`` (pixels weighted by their overlap), for shrinking and enlarging alike."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_resize(images, size: int | tuple[int, int]) -> np.ndarray:
    """Resize ``(n, H, W, C)`` to ``(n, h, w, C)`` float64 by exact area averaging (never crops; any sizes)."""
    x = to_float(images)
    h_out, w_out = (size, size) if isinstance(size, (int, np.integer)) else size
    if x.shape[1] == h_out and x.shape[2] == w_out:
        return x
    return np.einsum("ih,nhwc,jw->nijc", area_matrix(x.shape[1], h_out), x, area_matrix(x.shape[2], w_out),
                     optimize=True)
