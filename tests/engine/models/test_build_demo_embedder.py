"""The committed recipe that trains the demo image embedder runs and writes a folder the embedder loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[3] / "resources" / "build" / "build_demo_embedder.py"


def test_build_script_writes_a_loadable_embedder(tmp_path):
    from engine.models.embedders.demo import DemoImageEmbedder, load_demo_net

    spec = importlib.util.spec_from_file_location("build_demo_embedder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path / "emb"), "--n-images", "128", "--epochs", "1"]) == 0
    net, meta = load_demo_net(tmp_path / "emb")
    assert meta["recipe"]["n_images"] == 128 and set(meta["recipe"]["heldout"]) >= {"category_acc", "x_r2"}
    out = DemoImageEmbedder(tmp_path / "emb").embed(np.zeros((2, 64, 64, 3), np.uint8))
    assert out.shape == (2, 128) and np.isfinite(out).all()
