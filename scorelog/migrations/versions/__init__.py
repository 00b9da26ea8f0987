"""Alembic revisions, oldest first: ``vNNNN_<slug>.py``."""
