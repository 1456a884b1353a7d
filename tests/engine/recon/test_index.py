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
