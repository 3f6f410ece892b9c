"""kdt.activations: public namespace (filled in by its module owner)."""
