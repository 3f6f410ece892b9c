"""kdt.transfer: public namespace (filled in by its module owner)."""
