"""Thin routes: validate, call the model or the store, shape the answer."""
