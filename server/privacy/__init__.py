"""The privacy edges of issue 14: project policies, consent, privacy-compliant ingest, deletion,
retention and rate limits (docs/privacy.md)."""
