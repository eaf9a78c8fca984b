"""Render layer: IR -> platform JSON. Renderers read only the IR."""
