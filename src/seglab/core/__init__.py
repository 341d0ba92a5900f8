"""The numbers' core, in NumPy (and pandas for tables, SciPy for distance transforms): scores
from pixel counts, where a class's outline is (boundary IoU, HD95, surface Dice), calibration,
per-image evidence, the hidden-failure verdict, class-weight schemes and statistics over seeds
and images.

Nothing here imports TensorFlow, Keras or MLflow: a notebook or a report that only reads runs
back uses these without waiting for a deep-learning framework to load.
"""
