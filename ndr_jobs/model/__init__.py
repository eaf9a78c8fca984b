"""The Isolation Forest model: features, preprocessing, training, artifacts, registry and deployment gate.

The processing jobs (``if_training_job``, ``inference_predictions_job``, ``prediction_feature_join_job``)
are thin drivers over this package; every module here is importable without Spark.

* :mod:`ndr_jobs.model.artifacts` -- canonical JSON, deterministic tarballs, the run directory layout;
* :mod:`ndr_jobs.model.features` -- FG-A + FG-C per (host, window): loading, joining, feature selection,
  the fitted preprocessing (signed log1p + robust scaling) and per-row explanations;
* :mod:`ndr_jobs.model.forest` -- hyper-parameters, training, scoring, score summaries, drift (PSI, KS);
* :mod:`ndr_jobs.model.registry` -- the model store (local directory or S3 prefix) with its versions index
  and ``promoted`` pointer, and the SageMaker Model Registry calls;
* :mod:`ndr_jobs.model.gate` -- the deployment gate (validation metrics, drift against the promoted model).
"""
