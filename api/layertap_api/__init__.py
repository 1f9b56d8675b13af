"""Pydantic models of the ActivationExtraction resource: the single source of truth for the CRD."""
