"""The LayerTap kopf operator: ActivationExtraction -> JobSet, JobSet -> status."""
