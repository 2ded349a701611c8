"""Bad inputs by command: each case ends in one `error:` line, its exit code, nothing left behind and the source unchanged."""
