"""Deploy layer: generated definitions and project resources -> AWS, through boto3."""
