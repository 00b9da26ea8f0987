"""Alembic migrations of the scoring log (a package so setuptools ships the revisions)."""
