"""Expand layer: spec constructs -> plain IR states, with the constructs' invariants built in."""
