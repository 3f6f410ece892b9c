"""kdt.callbacks: public namespace (filled in by its module owner)."""
