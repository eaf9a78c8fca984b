"""ndr job library: the processing jobs SageMaker pipeline steps run (``python -m ndr_jobs.scripts.run_*``).

Importing a script module is cheap (no Spark): the compiler imports each one to check, with the script's
own parser, that the arguments a pipeline step passes are exactly the ones it accepts.
"""
