"""kdt.constraints: public namespace (filled in by its module owner)."""
