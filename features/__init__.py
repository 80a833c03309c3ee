"""Features: the feature registry and the one pure `compute_features` (built in the features issue)."""
