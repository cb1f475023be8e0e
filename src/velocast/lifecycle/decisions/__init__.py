"""Decisions: the double evaluation of a challenger, champion health and drift, promotion and
rollback of the champion alias, recalibration of its intervals, and what serves each model type.
See ``velocast.lifecycle``."""
