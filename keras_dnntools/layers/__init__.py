"""kdt.layers: public namespace (filled in by its module owner)."""
