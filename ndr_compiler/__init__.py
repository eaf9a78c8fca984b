"""ndr compiler: versioned YAML specs -> Step Functions ASL (JSONata) and SageMaker pipeline definitions."""

__version__ = "0.1.0"
