"""Package data: the built-in model shipped with diffuserve."""

from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


def builtin_model_path() -> Path:
    if not (BUILTIN_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"the built-in model is missing from {BUILTIN_DIR}; "
            "train it with `diffuserve train-builtin` or pass --model"
        )
    return BUILTIN_DIR
