"""Data in: sources, ingest, the partition's schema, validation, the rules events must keep, inference of a dataset spec, the synthetic data set."""
