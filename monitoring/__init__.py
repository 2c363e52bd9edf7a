"""Model monitoring computations (no Dagster): drift, realized performance, training/serving skew."""
