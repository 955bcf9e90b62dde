"""The network layer: loading a network, naming its layers and neurons, preprocessing, reductions.

Imports only :mod:`actstats.errors` and :mod:`actstats.resources`; everything above builds on it.
"""
