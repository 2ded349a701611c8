"""The workflows: the only code that writes a converted folder (`convert.py`: convert_folder) or a record
(`prove.py`: prove_folder). The CLI, convert-all, the demo and the scripts call these; they parse and render."""
