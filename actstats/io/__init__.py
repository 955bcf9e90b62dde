"""Files: the activation store, model files, image discovery and decoding, run specs, reports.

Each format has exactly one reader and writer here; the pipeline and tests use them.
"""
