"""Scoring: planning and running metrics on FeatureSets, bootstrap intervals, paper protocols
and the run's random streams."""
