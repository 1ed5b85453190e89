"""Labeled data: loading, cleaning, splits. Torch-free."""
from edgeft.data.loading import Example, SplitData, load_splits

__all__ = ["Example", "SplitData", "load_splits"]
