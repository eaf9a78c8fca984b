"""Thin command lines: parse arguments into a typed runtime config and delegate to ``ndr_jobs.processing``."""
