"""Serving: the prediction service, a registered model loaded for scoring, the portable (numpy) form of transforms and models, and its parity with Spark's scores."""
