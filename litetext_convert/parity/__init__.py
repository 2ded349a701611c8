"""Proof: compare, text, detector (and tracker), run, report helpers."""
