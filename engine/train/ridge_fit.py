"""The ridge fits of a ``ridge`` run: the model's RidgeCV from its ``model.params``, and the pixel decoders through an
image basis (``data.pixel_basis``)."""

from __future__ import annotations

from engine.train.config import TrainConfig
from engine.train.dataset import PreparedData
from engine.train.device import oom_guard


def new_ridge(params: dict, backend: str, device: str | None):
    """An unfitted ``RidgeCV`` with the run's ``alphas`` and ``cv`` (``model.params``)."""
    from engine.models.ridge import DEFAULT_ALPHAS, RidgeCV

    return RidgeCV(alphas=tuple(params.get("alphas", DEFAULT_ALPHAS)), cv=int(params.get("cv", 5)), backend=backend,
                   device=device)


def fit_pixel_basis(config: TrainConfig, data: PreparedData, subject, device, *, backend: str,
                    ridge_device: str | None):
    """``data.pixel_basis`` pca / multiscale: a ridge onto the basis, decoded to pixels
    (``engine.models.pixel_basis``). The PCA basis sees the training stimuli and prior images, never a test one."""
    from engine.models.pixel_basis import fit_pixel_decoder, pca_basis_images

    d = config.data
    y = data.targets[data.train_image].reshape(len(data.train_image), -1)
    basis_images, source = None, ""
    if d.pixel_basis == "pca":
        basis_images, source = pca_basis_images(subject, data.targets, data.train_image)
    h, w = subject.image_shape[:2]
    with oom_guard(device, what=f"fitting the {d.pixel_basis} pixel decoder"):
        return fit_pixel_decoder(d.pixel_basis, lambda: new_ridge(config.model.params, backend, ridge_device),
                                 data.train_betas, y, basis_images=basis_images,
                                 n_components=d.pca_components, image_shape=(h, w, y.shape[1] // (h * w)),
                                 cv=int(config.model.params.get("cv", 5)), basis_source=source)
