"""Evaluation: metrics (target score, NLL, Frechet distance, KID, diversity) and realism runs."""
