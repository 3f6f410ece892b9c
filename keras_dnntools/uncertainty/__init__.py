"""kdt.uncertainty: public namespace (filled in by its module owner)."""
