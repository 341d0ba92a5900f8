"""A run's record in MLflow: the store, the writer of one run, the run log that drives it epoch
by epoch, resuming, the logged model, provenance and the sweep callback.

- :mod:`seglab.tracking.store`: which store, whether it can be used, a client that waits;
- :mod:`seglab.tracking.tracker`: one run's lifecycle, params, tags, metrics, artifacts;
- :mod:`seglab.tracking.run_log`: what a seglab run logs and prints, and when;
- :mod:`seglab.tracking.console`: the lines a run prints;
- :mod:`seglab.tracking.resume`: which run ``resume`` continues;
- :mod:`seglab.tracking.runlock`: a live run is never resumed;
- :mod:`seglab.tracking.models`: the run's MLflow model, logged and safely loaded;
- :mod:`seglab.tracking.provenance`: the code and versions that made a run;
- :mod:`seglab.tracking.sweep`: a Hydra multirun as one parent run.
"""
