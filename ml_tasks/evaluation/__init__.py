"""Evaluation and registry: comparing candidates, blessing, versions and the champion."""
