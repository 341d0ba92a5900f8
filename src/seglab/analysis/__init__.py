"""Runs read back from MLflow into tidy frames, the rankings of configurations and the sweep
report. No TensorFlow: a notebook that only reads runs imports this alone.

- :mod:`seglab.analysis.runs`: MLflow -> history, summary, per-image counts, comparisons;
- :mod:`seglab.analysis.rankings`: configurations ranked by loss beside the worst class;
- :mod:`seglab.analysis.report`: the report document (markdown, terminal, HTML).
"""
