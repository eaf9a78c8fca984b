"""Developer tools, not run by any pipeline step: the data-plane benchmark, the detection evaluation and the
synthetic traffic generator."""
