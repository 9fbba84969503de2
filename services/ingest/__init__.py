"""ingest: raw events in, validated and de-duplicated features out, rejects to the DLQ."""
