"""Matplotlib figures from plain arrays and frames: no MLflow, no TensorFlow.

- :mod:`seglab.figures.style`: the palette and shared drawing helpers;
- :mod:`seglab.figures.run`: one run's figures;
- :mod:`seglab.figures.sweep`: a sweep's figures;
- :mod:`seglab.figures.gallery`: the per-epoch failure gallery.
"""
