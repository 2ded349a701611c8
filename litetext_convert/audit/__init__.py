"""Audit a transformers LiteText folder (or Hub repo) that litetext did not write, against the original.

One module per level: `tensors` (every stored tensor against the original through our mapping),
`config` (values that change the computation), `tokenizer` (pad id, context, special tokens, image
processor), `behaviour` (outputs the way a user runs the folder, the recipe that makes them agree,
and the cost of each finding). `run.audit` ties them together; `render` draws the report.
"""
