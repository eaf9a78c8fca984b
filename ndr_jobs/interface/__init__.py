"""The job library's declared interface, the only part of ``ndr_jobs`` the compiler imports.

``contract`` (value types), ``feature_spec`` (the FeatureSpec model), ``entrypoints`` (each script's
arguments) and ``progress`` (the progress line that the compiler, the local runs and the eval share).
Standard library, pydantic and PyYAML only.
"""
