"""kdt.metrics: public namespace (filled in by its module owner)."""
