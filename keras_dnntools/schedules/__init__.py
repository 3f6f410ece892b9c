"""kdt.schedules: public namespace (filled in by its module owner)."""
