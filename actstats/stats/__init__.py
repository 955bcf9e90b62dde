"""Statistics of activations: layer models (Gaussian, mixture, joint).

Arrays in, arrays out: no files, no dask, no zarr.
"""
