"""What the conversion will do, computed without writing: infer, mapping + ops, hf_config, prepare. inspect and parity stop here."""
