"""Ingestion: recorder webhooks (BililiveRecorder, blrec) and a folder watcher turn
finished recording files into hub parts grouped into recordings (see docs/internals.md)."""
