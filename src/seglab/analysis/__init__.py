"""Runs read back from MLflow into tidy frames, the rankings of configurations and the sweep
report. No TensorFlow: a notebook that only reads runs imports this alone.

- :mod:`seglab.analysis.runs`: MLflow -> history, summary, per-image counts, comparisons;
- :mod:`seglab.analysis.rankings`: configurations ranked by loss beside the worst class;
- :mod:`seglab.analysis.story`: the verdict in a few lines, with links into the MLflow UI;
- :mod:`seglab.analysis.links`: the MLflow UI's pages (a run, an experiment, metrics charted);
- :mod:`seglab.analysis.report`: the report document (markdown, terminal, HTML).
"""
