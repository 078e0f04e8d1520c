"""kymwatch: keeps the dataset tables of kymflow Zarr datasets up to date."""

__version__ = "0.1.0"
