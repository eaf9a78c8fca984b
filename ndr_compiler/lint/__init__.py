"""Lint layer: rules with stable codes over spec models and the expanded IR (the IR rules in ``rules``, the code
table in ``registry``; importing the package loads neither)."""
