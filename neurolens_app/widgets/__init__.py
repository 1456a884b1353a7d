"""Reusable widgets: flatmap, 3-D surface, slice view, colour bar helpers, voxel inspector."""
