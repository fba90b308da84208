"""MFM-Mapper: shared configuration, stage runner and CLI."""

__version__ = "0.1.0"
