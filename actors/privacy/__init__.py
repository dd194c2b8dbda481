"""Privacy and traffic rules of the ingest pipeline (issue 14): project policies, consent, rate
limits and sampling. Plain code with no I/O; the server keeps what it needs in memory."""
