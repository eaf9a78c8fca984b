"""Where the datasets live: their layout (names, partitions, windows) and the storage layer under it."""
