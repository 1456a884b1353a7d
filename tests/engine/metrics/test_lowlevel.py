import numpy as np
import pytest
import torch
from skimage.color import rgb2gray
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from engine.metrics import lowlevel


def _structured(rng, n, size):
    """Gradients, checkerboards, a constant image and blocky noise: inputs where loops and vectorised code diverge."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    imgs = [np.stack([x, y, x * y], -1), np.stack([(np.floor(x * 8) + np.floor(y * 8)) % 2] * 3, -1),
            np.full((size, size, 3), 0.5), np.kron(rng.random((4, 4, 3)), np.ones((size // 4, size // 4, 1)))]
    return np.stack([imgs[i % len(imgs)] for i in range(n)])


@pytest.mark.parametrize("shape_in,shape_out", [((256, 256), (425, 425)), ((512, 384), (256, 256)), ((37, 50), (256, 19))])
def test_resize_matches_torch_antialiased_bilinear(rng, shape_in, shape_out):
    x = rng.random((2, *shape_in, 3))
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=shape_out, mode="bilinear",
                                          align_corners=False, antialias=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(lowlevel.resize(x, shape_out), ref, atol=1e-12)
    np.testing.assert_allclose(lowlevel.resize_numpy(x, shape_out), ref, atol=1e-12)
    np.testing.assert_allclose(lowlevel.resize(x, shape_out, dtype=np.float32), ref, atol=1e-6)


def test_prepare_uint8_to_256_float(rng):
    x = rng.integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    p = lowlevel.prepare_images(x)
    assert p.shape == (3, 256, 256, 3) and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_ssim_grey_matches_skimage(rng, kind):
    if kind == "random":
        a = rng.random((4, 40, 57))
        b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)
    else:
        a = rgb2gray(_structured(rng, 4, 48))
        b = np.roll(a, 3, axis=1) * 0.9 + 0.05
    ours = lowlevel.ssim_grey(a, b)
    ref = [structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0) for i in range(len(a))]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_ssim_full_protocol_matches_skimage_loop(rng):
    gt = lowlevel.prepare_images(np.concatenate([_structured(rng, 2, 64), rng.random((2, 64, 64, 3))]))
    rec = lowlevel.prepare_images(np.clip(rng.random((4, 64, 64, 3)) * 0.5 + 0.25, 0, 1))
    ours = lowlevel.ssim(gt, rec)
    ref = []
    for i in range(4):
        # reference: RGB resized to 425² and stored as float32 (MindEyeV2's pipeline), then rgb2gray and skimage in
        # float64 (skimage keeps float32 input in float32, which moves SSIM by ~1e-6)
        g = rgb2gray(lowlevel.resize(gt[i : i + 1], 425, dtype=np.float32)[0].astype(np.float64))
        r = rgb2gray(lowlevel.resize(rec[i : i + 1], 425, dtype=np.float32)[0].astype(np.float64))
        ref.append(structural_similarity(r, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1.0))
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(lowlevel.ssim(gt, gt), 1.0, atol=1e-9)


def test_pixcorr_matches_numpy_corrcoef(rng):
    gt = lowlevel.prepare_images(np.concatenate([_structured(rng, 4, 32)[[0, 1, 3]], rng.random((2, 32, 32, 3))]))
    rec = lowlevel.prepare_images(rng.random((5, 32, 32, 3)))
    rec[0] = gt[0] * 0.5 + 0.1  # perfectly correlated pair
    ours = lowlevel.pixcorr(gt, rec)
    g = lowlevel.resize(gt, 425, dtype=np.float32).reshape(5, -1)
    r = lowlevel.resize(rec, 425, dtype=np.float32).reshape(5, -1)
    ref = [np.corrcoef(g[i], r[i])[0, 1] for i in range(5)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert ours[0] == pytest.approx(1.0, abs=1e-9)


def test_mse_psnr_match_skimage(rng):
    a = rng.random((3, 16, 16, 3))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    np.testing.assert_allclose(lowlevel.mse(a, b), [mean_squared_error(a[i], b[i]) for i in range(3)], atol=1e-12)
    np.testing.assert_allclose(lowlevel.psnr(a, b), [peak_signal_noise_ratio(a[i], b[i], data_range=1.0)
                                                     for i in range(3)], atol=1e-9)
    assert np.isinf(lowlevel.psnr(a, a)).all()


def test_mismatched_batches_rejected(rng):
    with pytest.raises(ValueError, match="equal n"):
        lowlevel.pixcorr(rng.random((2, 8, 8, 3)), rng.random((3, 8, 8, 3)))


@pytest.mark.parametrize("shape,size", [((3, 37, 50, 3), 425), ((2, 96, 64, 3), 40)])
def test_pixcorr_without_materialising_matches_resize_then_corrcoef(rng, shape, size):
    # PixCorr uses the banded RᵀR identity instead of building the resized images: check it on odd, shrinking sizes
    gt, rec = rng.random(shape), rng.random(shape)
    rec[0] = gt[0] ** 2
    g = lowlevel.resize(gt, size).reshape(len(gt), -1)
    r = lowlevel.resize(rec, size).reshape(len(rec), -1)
    ref = [np.corrcoef(g[i], r[i])[0, 1] for i in range(len(gt))]
    np.testing.assert_allclose(lowlevel.pixcorr(gt, rec, size=size), ref, atol=1e-9)
