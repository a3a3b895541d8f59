"""xnorflow: binarized neural networks to bit-exact streaming FPGA accelerators."""
import sys as _sys
from pathlib import Path as _Path

__version__ = "0.1.0"

# The package is its five folders and errors.py. An installed wheel holds only those, but an
# editable install maps the package to the repository root, where tests/, bench/ and docs/ would
# import as namespace packages (xnorflow.tests, ...); there this finder, first in line, refuses them.
_PUBLIC = frozenset({"training", "compiler", "hw", "sim", "boards", "errors"})


class _OnlyPublicParts:
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        parts = fullname.split(".")
        if len(parts) == 2 and parts[0] == __name__ and parts[1] not in _PUBLIC:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


if _Path(__file__).with_name("pyproject.toml").is_file() and not any(
        isinstance(f, type) and f.__name__ == "_OnlyPublicParts" for f in _sys.meta_path):
    _sys.meta_path.insert(0, _OnlyPublicParts)
