"""Brain and target models: ridge, image/text embedders, MLP backbone, masked brain model, Mixture-of-Experts.

Import-light on purpose: nothing here imports torch or transformers; import the submodule you need
(``engine.models.ridge``, ``engine.models.embedders``, ``engine.models.encoding``, ...).
"""
