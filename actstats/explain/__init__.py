"""Explaining one image: saliency and localization maps (pure functions of arrays and a network)."""
