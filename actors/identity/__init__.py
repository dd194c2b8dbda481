"""Cross-device identity (issue 14 part 1): the identity graph of linked sessions, its merge
guards, the continuity figures of a link, and each node's in-memory copy of the graphs."""
