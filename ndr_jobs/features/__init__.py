"""Helpers shared by the feature jobs (FG-A, pair counts, FG-B, FG-C): address classes, segments, periodicity."""
