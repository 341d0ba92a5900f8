"""Searching the remedies: ``seglab train -m search=<question>`` samples the options a question
names (``conf/search/``) with Optuna, one MLflow run per trial under one parent, and reports the
trade-off the objectives make (their Pareto front)."""
