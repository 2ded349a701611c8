"""Where a checkpoint comes from: resolve (alias, Hub, path) and load (sniff, weights-only, unwrap)."""
