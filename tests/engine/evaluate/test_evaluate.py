import csv
import json

import numpy as np
import pytest

from engine.cli.main import main
from engine.errors import DataError
from engine.evaluate import EvaluationConfig, evaluate_folder, load_png
from engine.metrics import aggregate, lowlevel
from engine.metrics.trial import per_trial_metrics
from engine.metrics.retrieval import RetrievalConfig, top1_retrieval
from engine.metrics.semantic import NWayConfig
from engine.models.embedders.features import ImageClassifier
from tests.engine.metrics.recon_folder import pixel_extractor, write_recon_folder

CFG = EvaluationConfig(n_way=NWayConfig(n=10, trials=200), label_n_way=50,
                       retrieval=RetrievalConfig(pool=300, repeats=5), blend=True)


def _classifier():
    w = np.random.default_rng(5).standard_normal((48, 12))

    def fn(images):
        return pixel_extractor()(images) @ w

    return ImageClassifier(spec="pixel-linear", labels=[f"c{i}" for i in range(12)], protocol="test", fn=fn)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 64 px: NSD protocol (stimuli up to 56 px are scored at their own size, see test_pixel_identification.py)
    return write_recon_folder(tmp_path_factory.mktemp("recon") / "run-a", n_items=6, k=2, size=64)


@pytest.fixture(scope="module")
def result(folder):
    return evaluate_folder(folder, features=[pixel_extractor()], classifier=_classifier(), config=CFG)


def test_rows_cover_every_image_set_and_aggregate(result):
    labels = [r["images"] for r in result.rows]
    assert labels == ["samples mean (k=2)", "samples best-of-k (k=2)", "samples best set (k=2)",
                      "blend .75/.25 mean (k=2)", "blend .75/.25 best-of-k (k=2)", "blend .75/.25 best set (k=2)",
                      "blurry"]
    for col in ["PixCorr", "SSIM", "MSE", "PSNR", "2-way pix4", "corr-dist pix4", "n-way labels pix4", "10-way top-1",
                "retrieval brain → image", "retrieval image → brain"]:
        assert col in result.columns and col in result.protocol
    assert result.higher_is_better["MSE"] is False and result.higher_is_better["corr-dist pix4"] is False
    assert {r["label_n"] for r in result.rows} == {3}  # n of the label n-way: in the rows, not the column name


def test_unavailable_metrics_are_listed_with_reasons(result):
    u = result.unavailable
    for key in ["AlexNet(2) (2-way)", "AlexNet(5) (2-way)", "InceptionV3 (2-way)", "EffNet-B (distance)",
                "SwAV (distance)", "CLIP (2-way)", "brain r"]:
        assert key in u and u[key]
    assert "no encoding model" in u["brain r"]


def test_per_trial_values_match_direct_computation(folder, result):
    t = result.per_trial
    n_rows = 6 * 2 * 2 + 6  # samples + blend (k = 2 each) + blurry
    assert all(len(v) == n_rows for v in t.values())
    index = json.loads((folder / "index.json").read_text())
    gt = lowlevel.prepare_images(np.stack([load_png(folder, it["ground_truth"]) for it in index["items"]]))
    s1 = lowlevel.prepare_images(np.stack([load_png(folder, it["samples"][1]) for it in index["items"]]))
    sel = (t["images"] == "samples") & (t["sample"] == 1)
    assert t["image_index"][sel].tolist() == [it["image_index"] for it in index["items"]]
    np.testing.assert_allclose(t["PixCorr"][sel], lowlevel.pixcorr(gt, s1), atol=1e-9)
    np.testing.assert_allclose(t["SSIM"][sel], lowlevel.ssim(gt, s1), atol=1e-9)
    # the row values are the aggregates of the per-trial values
    samples = t["images"] == "samples"
    ssim = t["SSIM"][samples].reshape(2, 6).T
    assert result.rows[0]["SSIM"] == pytest.approx(ssim.mean())
    assert result.rows[1]["SSIM"] == pytest.approx(aggregate.best_of_k(ssim))
    mse = t["MSE"][samples].reshape(2, 6).T
    assert result.rows[1]["MSE"] == pytest.approx(mse.min(axis=1).mean())  # lower is better: best = min
    # one clicked trial, as the GUI asks for it
    one = per_trial_metrics(load_png(folder, index["items"][2]["ground_truth"]),
                            np.stack([load_png(folder, s) for s in index["items"][2]["samples"]]),
                            extractors=[pixel_extractor()])
    item2 = samples & (t["image_index"] == index["items"][2]["image_index"])
    np.testing.assert_allclose(one["SSIM"], t["SSIM"][item2], atol=1e-9)
    np.testing.assert_allclose(one["corr-dist pix4"], t["corr-dist pix4"][item2], atol=1e-6)


def test_retrieval_uses_embeddings_aligned_by_image_index(folder, result):
    z = np.load(folder / "embeddings.npz", allow_pickle=False)
    order = np.argsort(z["image_index"])  # the fixture's items are in ascending image_index
    ref = top1_retrieval(z["brain"][order], z["target"][order], CFG.retrieval)
    assert result.rows[0]["retrieval brain → image"] == pytest.approx(ref["brain_to_image"].mean)
    assert result.rows[0]["retrieval image → brain"] == pytest.approx(ref["image_to_brain"].mean)
    assert "among all 6 test items" in result.protocol["retrieval brain → image"]


def test_bad_index_names_the_key(tmp_path):
    f = write_recon_folder(tmp_path / "bad", n_items=3, k=1, embeddings=False)
    d = json.loads((f / "index.json").read_text())
    d["items"][1]["samples"] = []
    (f / "index.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="samples"):
        evaluate_folder(f, features=[pixel_extractor()])
    with pytest.raises(DataError, match="index.json"):
        evaluate_folder(tmp_path)


def test_cli_two_folders_json_and_csv(tmp_path, capsys):
    a = write_recon_folder(tmp_path / "a", n_items=4, k=1, blurry=False, embeddings=False, method="m-a")
    b = write_recon_folder(tmp_path / "b", n_items=4, k=1, categories=None, method="m-b", seed=1)
    out_csv = tmp_path / "trials.csv"
    rc = main(["evaluate", str(a), str(b), "--features", "inception", "--json", "--csv", str(out_csv),
               "--retrieval-repeats", "3"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["images"] for r in d["rows"]] == ["samples", "samples", "blurry"]
    assert {r["method"].split(" ")[0] for r in d["rows"]} == {"m-a", "m-b"}
    assert "InceptionV3 (2-way)" in d["unavailable"] and "n-way labels" in d["unavailable"]
    assert "retrieval brain → image" in d["unavailable"]  # folder a has no embeddings.npz
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4 + 4 + 4 and {"PixCorr", "SSIM", "image_index", "sample"} <= set(rows[0])
    rc = main(["evaluate", str(a), "--features", "inception"])
    text = capsys.readouterr().out
    assert rc == 0 and "PixCorr ↑" in text and "unavailable:" in text and "protocol:" in text


def test_the_table_fits_120_columns_with_the_method_in_the_header(tmp_path):
    from engine.evaluate.table import format_table

    a = write_recon_folder(tmp_path / "a", n_items=6, k=2, method="a long method name " * 6)
    b = write_recon_folder(tmp_path / "b", n_items=6, k=2, method="m-b", seed=1)
    res = evaluate_folder(a, features=[pixel_extractor()], classifier=_classifier(), config=CFG).merge(
        evaluate_folder(b, features=[pixel_extractor()], classifier=_classifier(), config=CFG))
    text = format_table(res)
    table = text.split("\nunavailable:")[0]
    assert max(len(line) for line in table.splitlines() if not line.startswith("  ")) <= 120
    assert table.count("a long method name") == 6  # once, in the header line of folder A
    assert "n-way labels: n = 3" in table and "n-way labels pix4 ↑" in table
    for col in res.columns:
        if not col.endswith("95% CI"):
            assert col in table


def test_cli_missing_folder_exits_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "index.json" in capsys.readouterr().err


def _blocky_subject(n_train=200, n_test=6, n_voxels=32, seed=1):
    """A subject whose voxels are a linear function of 4×4 block colours (what ``pixel_extractor`` reads)."""
    from engine.data.subject import Subject, TrialTable

    rng = np.random.default_rng(seed)
    n_images = n_train + n_test
    blocks = rng.integers(0, 256, (n_images, 4, 4, 3)).astype(np.uint8)
    images = np.kron(blocks, np.ones((1, 4, 4, 1), np.uint8))  # (n, 16, 16, 3)
    w = rng.standard_normal((48, n_voxels))
    image_index = np.concatenate([np.arange(n_train), np.repeat(np.arange(n_train, n_images), 3)])
    n_trials = len(image_index)
    betas = (blocks.reshape(n_images, -1) / 255.0)[image_index] @ w + 0.3 * rng.standard_normal((n_trials, n_voxels))
    trials = TrialTable(image_index=image_index, session=np.ones(n_trials, np.int64), run=np.ones(n_trials, np.int64),
                        repeat=np.concatenate([np.zeros(n_train, np.int64), np.tile(np.arange(3), n_test)]),
                        split=np.concatenate([np.zeros(n_train, np.int8), np.ones(3 * n_test, np.int8)]))
    rois = {"V1": np.arange(n_voxels) < n_voxels // 2, "LO": np.arange(n_voxels) >= n_voxels // 2}
    return Subject(betas=betas.astype(np.float32), trials=trials, images=images, rois=rois, name="blocky")


def test_brain_correlation_with_a_fitted_encoding_model(tmp_path):
    from engine.models.encoding import fit_encoding
    from PIL import Image

    subject = _blocky_subject()
    extractor = pixel_extractor()
    maps = fit_encoding(extractor(lowlevel.prepare_images(subject.images)), subject, cv=3)
    folder = write_recon_folder(tmp_path / "r", n_items=6, k=1, blurry=False, embeddings=False)
    index = json.loads((folder / "index.json").read_text())
    test_images, groups = subject.repeat_groups("test")
    for it, img, tr in zip(index["items"], test_images, groups):  # ground truths = the subject's test images
        Image.fromarray(subject.images[img]).save(folder / it["ground_truth"])
        it["trials"] = tr.tolist()
    (folder / "index.json").write_text(json.dumps(index))
    res = evaluate_folder(folder, features=[extractor], subject=subject, encoding=maps, encoding_features=extractor,
                          config=CFG)
    assert "brain r" not in res.unavailable
    rows = {r["images"]: r for r in res.rows}
    assert {"brain r all", "brain r V1", "brain r LO"} <= set(rows["ground truth"])
    # the ceiling row (ground truth through the encoder) beats unrelated reconstructions
    assert rows["ground truth"]["brain r all"] > 0.8
    assert rows["ground truth"]["brain r all"] > rows["samples"]["brain r all"] + 0.3
