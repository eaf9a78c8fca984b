"""Container glue: typed runtime configurations, the Spark session and the ``smspark-submit`` launcher."""
