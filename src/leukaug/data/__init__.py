"""The data layer: read a data set into a manifest, split it, cache its images, synthesise one."""

from leukaug.data.cache import ImageCache, load_or_build_cache
from leukaug.data.read import Dataset, read_dataset
from leukaug.data.split import split_manifest, split_report

__all__ = [
    "Dataset",
    "ImageCache",
    "load_or_build_cache",
    "read_dataset",
    "split_manifest",
    "split_report",
]
