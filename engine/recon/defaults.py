"""The reconstruction settings a user gets unless they choose others: one owner for the engine, the CLI and the GUI.

Kept free of torch so that the window can read them at start-up.
"""

STEPS = 25  # denoising steps (upstream NeuroLens: DDIM 30; 25 keeps the demo interactive on a CPU)
GUIDANCE = 3.0  # classifier-free guidance scale (upstream NeuroLens 3)
SAMPLES = 4  # samples per image (K)
SAMPLER = "ddim"
SEED = 0  # base seed of the noise (each image and sample derives its own)
REPEAT_MODE = "average_embeddings"  # test repeats: single-trial predictions averaged in embedding space
