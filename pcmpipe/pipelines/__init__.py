"""Experiments: pipeline specs (one YAML per paper table or figure), the planner/runner, the offline demo."""
