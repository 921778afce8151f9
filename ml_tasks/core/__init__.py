"""The small core every stage stands on: dataset specs, run settings, the stage table, where files live (Layout), atomic writes, errors, processes, the environment and the Spark session."""
