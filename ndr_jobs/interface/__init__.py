"""The job library's declared interface, the only part of ``ndr_jobs`` the compiler imports.

``contract`` (value types), ``feature_spec`` (the FeatureSpec model) and ``entrypoints`` (each script's
arguments). Standard library, pydantic and PyYAML only.
"""
