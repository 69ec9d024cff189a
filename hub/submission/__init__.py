"""Submission: render a recording's templates and submit it, exactly once, through an
agent over its stream (see docs/internals.md "Ingestion and submission")."""
