"""Reports: the run's printed summary and its HTML report."""
