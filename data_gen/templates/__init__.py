"""Versioned prompt templates and seed data for data_gen (data files; see ../prompt_templates.py)."""
