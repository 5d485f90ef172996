"""The old home of the CLV models' Python stages, kept for models saved before the layered
layout: a saved pipeline names each Python stage by its class path (``custseg.clv_models.*``)."""

from custseg.ml.clv_models import BtydSpend, VectorElement

__all__ = ["BtydSpend", "VectorElement"]
