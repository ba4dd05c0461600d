"""Policies: models, conditions, matcher, the pure evaluator, the store, the runner, routes."""
