"""Test doubles for the pipeline's external services (a fake OpenAI-compatible judge server)."""
