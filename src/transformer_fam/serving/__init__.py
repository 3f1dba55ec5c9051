"""Serving: an OpenAI-compatible HTTP server whose documents are read once into saved states."""
