"""Configuration: the packaged defaults, a user YAML file and ``--set`` overrides, validated
before any Spark work starts."""

from custseg.config.loading import (
    CLUSTER_ALGORITHMS,
    CLUSTER_FEATURES,
    FIELDS,
    Config,
    load_config,
    load_defaults,
    spark_charset,
    validate,
)

__all__ = ["CLUSTER_ALGORITHMS", "CLUSTER_FEATURES", "FIELDS", "Config", "load_config",
           "load_defaults", "spark_charset", "validate"]
