"""Processing jobs: ``run_*_from_runtime_config(runtime)`` functions taking typed runtime configs."""
