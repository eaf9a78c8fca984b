"""Feature logic shared by the feature jobs (FG-A, pair counts, FG-B, FG-C): address classes, segments,
periodicity, and the compiled hash aggregation of the delta builder."""
