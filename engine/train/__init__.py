"""The training engine: typed run configs, run folders, checkpoints, the training job, presets and prediction.

Import the submodule you need (``engine.train.trainer.train_job``, ``engine.train.predict.predict_embeddings``,
``engine.train.presets.get_preset``); this package imports nothing heavy itself.
"""
