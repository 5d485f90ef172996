"""One module per stage: read inputs, build, write, record, summarise."""
