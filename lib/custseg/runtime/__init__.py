"""What a run needs around the data: the Spark session, run id, lock, stage memo, model
registry, logs and threads."""
