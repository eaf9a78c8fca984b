"""ndr job library: the processing jobs SageMaker pipeline steps run (``python -m ndr_jobs.scripts.run_*``).

The compiler depends on ``ndr_jobs.interface`` only (value types, the feature spec model, each entrypoint's
declared arguments); the scripts build their parsers from the same declarations.
"""
