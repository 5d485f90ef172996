"""DataFrame in, DataFrame out: bronze, silver and gold reporting transforms. No I/O."""
