"""The converted folder: the names of the files litetext writes into it."""

CONVERSION_RECORD = "conversion_record.json"
PARITY_RECORD = "parity_record.json"
