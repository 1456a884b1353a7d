"""Readers of the field's datasets; each module provides ``sniff(path) -> bool`` and ``read(path, **options) -> Subject``.

``nsd`` (MindEyeV2 layout), ``god`` (MinD-Vis npz), ``bold5000`` (GLMsingle ROI betas), ``nifti`` (volumes + BIDS-style
TSV), ``arrays`` (npz/mat/h5 with a mapping file). Shared checks live in ``checks``, lazy HDF5 views in ``lazy``.
They are imported by ``engine.data.formats`` only when used.
"""
