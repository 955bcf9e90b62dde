"""Pipelines: the library entry points behind each CLI command (collect, fit, sample, explain).

They open files through :mod:`actstats.io`, run math from :mod:`actstats.stats` and
:mod:`actstats.synth`, and report progress through callbacks (bars are drawn in
:mod:`actstats.cli`).
"""
