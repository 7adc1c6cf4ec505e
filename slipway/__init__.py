"""Slipway: the release pipeline for ML models. The spine the flows, tasks and targets share."""
