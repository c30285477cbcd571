"""Shared by every stage: the config and its checks, what defines each result (identity), atomic
files (io), logs with secrets redacted, what a stop signal means, where a model file lives, the CLI."""
