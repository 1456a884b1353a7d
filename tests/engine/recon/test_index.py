import json

import numpy as np
import pytest

from engine.errors import DataError
from engine.recon.index import (RECON_INDEX_SCHEMA, SCHEMA, ReconIndex, ReconItem, load_embeddings, read_index,
                                save_embeddings)


def test_index_round_trips_and_documents_its_schema(tmp_path):
    assert "neurolens-recon/1" in RECON_INDEX_SCHEMA and "embeddings.npz" in RECON_INDEX_SCHEMA
    idx = ReconIndex(subject="s", run="r", split="test", method="m", settings={"guidance": 3.0}, embedder="demo",
                     items=[ReconItem(3, [10, 11], "cat", "gt/img-00003.png", None, ["samples/img-00003-s0.png"])])
    idx.save(tmp_path)
    d = json.loads((tmp_path / "index.json").read_text())
    assert d["schema"] == SCHEMA and d["items"][0]["trials"] == [10, 11]
    assert read_index(tmp_path) == idx
    save_embeddings(tmp_path, np.array([3]), np.ones((1, 4)), np.zeros((1, 4)))
    z = load_embeddings(tmp_path)
    assert z["brain"].dtype == np.float32 and z["image_index"].tolist() == [3]


def test_unknown_schema_is_refused(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(DataError, match="schema"):
        read_index(tmp_path)


def _write(folder, items, **extra):
    d = {"schema": SCHEMA, "subject": None, "run": None, "split": "test", "method": "m", "settings": {},
         "embedder": None, "items": items, **extra}
    (folder / "index.json").write_text(json.dumps(d))


def test_the_one_index_is_frozen_and_checked_as_evaluate_checked_it(tmp_path):
    """One ``ReconIndex`` for writers and readers: frozen, with the stricter checks evaluate had on its own copy."""
    import dataclasses

    item = {"image_index": 1, "trials": [1], "category": None, "ground_truth": "gt/1.png", "blurry": None,
            "samples": ["s/1-0.png", "s/1-1.png"]}
    _write(tmp_path, [item, {**item, "image_index": 2, "samples": ["s/2-0.png"]}])
    with pytest.raises(DataError, match=r"items\[\]\.samples"):
        read_index(tmp_path)
    _write(tmp_path, [item, {**item, "image_index": 2, "blurry": "b/2.png"}])
    with pytest.raises(DataError, match=r"items\[\]\.blurry"):
        read_index(tmp_path)
    _write(tmp_path, [item, {**item, "trials": "12"}])
    with pytest.raises(DataError, match=r"items\[1\]"):
        read_index(tmp_path)
    (tmp_path / "subj").mkdir()
    _write(tmp_path, [item], subject="subj", settings={"generator": "demo", "guidance": 3.0})
    idx = read_index(tmp_path)
    assert idx.subject == str(tmp_path / "subj") and idx.path == tmp_path  # relative to the folder
    assert idx.k == 2 and idx.label == "m [gen demo, cfg 3.0]" and idx.items[0].trials == (1,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        idx.method = "other"
    renamed = idx.replace(method="other")
    assert renamed.method == "other" and renamed.items == idx.items and idx.method == "m"
