"""Datasets: readers for official formats, preprocessing, the synthetic default, the DataModule."""
from genrec.data import sources, synthetic  # noqa: F401  (register the dataset readers)
from genrec.data.datamodule import LoaderConfig, PreprocessConfig, SequenceDataModule
from genrec.data.multidomain import MultiDomainDataModule
from genrec.data.preprocess import SequenceData
from genrec.data.raw import DataError, RawData
from genrec.data.registry import SOURCES, get_source, register_source

__all__ = ["SequenceDataModule", "LoaderConfig", "PreprocessConfig", "MultiDomainDataModule", "SequenceData", "DataError", "RawData", "SOURCES", "get_source", "register_source"]
