"""Where data comes from and goes: paths, storage, source readers, Delta tables, the catalog."""
