"""Candidate model families. Each exposes `fit(development, validation, folds, settings, costs) ->
Candidate` and a pyfunc wrapper that depends only on numpy/pandas/its ML library (never on CTA), so
the serving process loads it through MLflow without importing `training`."""
