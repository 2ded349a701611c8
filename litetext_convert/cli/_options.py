"""Options shared by several commands, declared once so that one name has one meaning everywhere.

The converted folder is always the positional FOLDER: the folder `convert` creates, and the folder
`parity` and `push` read. `convert-all` takes the parent FOLDER of one subfolder per checkpoint.
The names the folder had before (`-o/--output-dir`, `--converted`) still work, hidden from help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litetext_convert.errors import LitetextError
from litetext_convert import dtypes
from litetext_convert.targets import scope, target_names



def _convert_dtype(value: str) -> str:
    return dtypes.canonical(value, allow_keep=True)


def _parity_dtype(value: str) -> str:
    return dtypes.canonical(value)  # float32/float64, or a reduced dtype: exactness in it + its cost


def _target(value: str) -> str:
    names = target_names()  # configs/targets/; which a checkpoint offers is its family's data
    if value not in names:
        raise LitetextError(f"--target {value!r}: choose {' or '.join(names)}")
    return value


def _scope(value: str) -> str:
    return scope(value).name  # configs/scopes.toml; an unknown name is refused in one line


# ---------------------------------------------------------------- the source checkpoint

CheckpointOpt = Annotated[
    str,
    typer.Option("--checkpoint", "-c", metavar="CKPT",
                 help="Alias (s0_ctx16, sam3p1_s0_ctx16, ...), REPO_ID:PATH/IN/REPO, or a local file."),
]
RepoIdOpt = Annotated[
    Optional[str], typer.Option("--repo-id", metavar="ORG/NAME", help="Hub repo holding the alias' file (default: the family's, configs/families/).")
]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", metavar="REV", help="Hub revision of the source (branch, tag or commit).")]
ContextOpt = Annotated[
    Optional[int],
    typer.Option("--context-length", min=1, metavar="N", help="Text context; default: ctxNN in the file name, else the table."),
]
HeadsOpt = Annotated[Optional[int], typer.Option("--num-heads", min=1, metavar="N", help="Text attention heads (not visible in the weights).")]
TargetOpt = Annotated[
    str,
    typer.Option("--target", metavar="TARGET", callback=_target,
                 help="image: the family's image model (Sam3LiteTextModel) | video: Sam3VideoModel (detector + tracker)."),
]
TokenizerOpt = Annotated[
    Optional[str],
    typer.Option("--tokenizer", metavar="DIR|REPO", help="CLIP tokenizer folder or Hub repo (default openai/clip-vit-base-patch32)."),
]

# ---------------------------------------------------------------- the converted folder

FolderArg = Annotated[
    Optional[Path], typer.Argument(metavar="FOLDER", show_default=False, help="The converted folder.")
]
LegacyOutputOpt = Annotated[Optional[Path], typer.Option("--output-dir", "-o", "--output", hidden=True, help="Same as FOLDER.")]
LegacyConvertedOpt = Annotated[Optional[Path], typer.Option("--converted", hidden=True, help="Same as FOLDER.")]

# ---------------------------------------------------------------- writing

ConvertDtypeOpt = Annotated[
    str,
    typer.Option("--dtype", metavar="DTYPE", callback=_convert_dtype,
                 help="keep | float32 | bfloat16 | float16 | float64 (aliases fp32, bf16, fp16, fp64)."),
]
MaxShardOpt = Annotated[str, typer.Option("--max-shard-size", metavar="SIZE", help="Largest safetensors shard, e.g. 5GB, 500MB.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output folder (only once the new one is complete).")]
VerifyLoadOpt = Annotated[bool, typer.Option("--verify-load", help="Also reload the folder with Sam3LiteTextModel.from_pretrained.")]

# ---------------------------------------------------------------- parity

ScopeOpt = Annotated[str, typer.Option("--scope", metavar="SCOPE", callback=_scope, help="text | detector | tracker (a video folder) | all (all adds tracker for a video folder).")]
ParityDtypeOpt = Annotated[
    str, typer.Option("--dtype", metavar="DTYPE", callback=_parity_dtype, help="float32 | float64 (both sides) | bfloat16 | float16 (exactness in that dtype + its cost); aliases fp32, fp64, bf16, fp16.")
]

# ---------------------------------------------------------------- the Hub (publishing)

PrivateOpt = Annotated[bool, typer.Option("--private", help="Create new repositories as private; an existing public one is refused.")]
TokenOpt = Annotated[
    Optional[str], typer.Option("--token", metavar="TOKEN", help="Hub token (else HF_TOKEN or the `hf auth login` cache); never printed.")
]
NamespaceOpt = Annotated[
    Optional[str],
    typer.Option("--namespace", metavar="USER|ORG",
                 help="Push to NAMESPACE/sam3-litetext-<variant>-ctx<N> (default namespace: your Hub user)."),
]

# ---------------------------------------------------------------- output

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result (or the error) as JSON on stdout; no progress lines.")]


def one_folder(ctx: typer.Context, positional: Path | None, legacy: Path | None, *, required: bool) -> Path | None:
    """FOLDER, or the same folder given under its old option name; never both."""
    import click

    if positional is not None and legacy is not None and Path(positional) != Path(legacy):
        raise click.UsageError("give the folder once (FOLDER; --output-dir/--converted are its old names)", ctx)
    folder = positional if positional is not None else legacy
    if folder is None and required:
        raise click.UsageError("missing FOLDER", ctx)
    return folder
