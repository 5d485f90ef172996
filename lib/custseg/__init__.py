"""custseg: customer segmentation and lifetime value on Spark and Delta Lake."""

__version__ = "0.1.0"
