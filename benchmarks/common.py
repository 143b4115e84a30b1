"""What the benchmarks share: models, data, timing, memory, the machine, the authors' selector.

The benchmarks are scripts (``python benchmarks/<name>.py``). Python puts the
script's own folder first on ``sys.path``, so each imports this module as plain
``common``; ``scripts/gpu_check.py``, which lives elsewhere, adds ``benchmarks/``
to its path once.

* models: :data:`SHAPES` (random-weight Llamas of known shapes), :func:`build_model`,
  :func:`load_backbone_model` (a ``conf/backbone/<name>.yaml`` backbone);
* data: :func:`default_data_dir`, :func:`lastfm_datamodule`, :func:`load_datamodule`
  (LastFM, else the synthetic dataset), :func:`dataset_tokenizers`, :func:`sample_rows`,
  :func:`make_synthetic_batch` (random ids of drawn lengths);
* measurement: :func:`synchronize`, :func:`timed`, :func:`cpu_peak_mib`,
  :func:`machine_description`;
* the authors' per-example selection + dual-margin β (:func:`authors_select_and_beta`),
  re-implemented from the description of the official DynamicPO code.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
# The shared datasets beside the checkout (as in the tests), when RECPO_DATA_DIR is not set.
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
BPE_VOCAB_SIZE = 8000
BATCH_KEYS = ("prompt_ids", "prompt_mask", "answer_ids", "answer_mask")

SHAPES: dict[str, dict[str, Any]] = {
    # The tiny backbone of the project's CPU runs.
    "tiny": dict(
        num_hidden_layers=2,
        hidden_size=128,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=4,
    ),
    # Llama-2-7b: its vocabulary replaces the tokenizer's.
    "llama2-7b": dict(
        num_hidden_layers=32,
        hidden_size=4096,
        intermediate_size=11008,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    # SmolLM2-135M (a Llama with grouped-query attention and tied embeddings).
    "smollm2-135m": dict(
        num_hidden_layers=30,
        hidden_size=576,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        rope_theta=100000.0,
    ),
}

ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flex": "flex_attention"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------- models


def add_data_arguments(parser: argparse.ArgumentParser, synthetic: bool = True) -> None:
    """``--data-dir`` (and ``--synthetic``): where the benchmarks read their rows."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder holding lastfm/ (default: $RECPO_DATA_DIR, else ../shared/data beside the repo)",
    )
    if synthetic:
        parser.add_argument("--synthetic", action="store_true", help="use the synthetic dataset")


def enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant gradient checkpointing (it needs no input that requires grad: LoRA).

    transformers 5 renamed ``gradient_checkpointing_enable``; both names are accepted.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def add_lora(model: nn.Module) -> nn.Module:
    """``model`` wrapped with a fresh LoRA adapter: r=8, alpha=32, every projection."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=8, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lora)


def build_model(
    args: argparse.Namespace, vocab_size: int, *, lora: bool | None = None
) -> nn.Module:
    """Random-weight Llama of ``args.shape``, built directly on the device in ``args.dtype``.

    ``args`` needs ``shape``, ``attn``, ``device``, ``dtype``, ``gradient_checkpointing``,
    ``seed`` and (unless ``lora`` is given) ``lora``. A shape that names its own
    vocabulary ignores ``vocab_size``.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    dims = dict(SHAPES[args.shape])
    dims.setdefault("vocab_size", vocab_size)
    config = LlamaConfig(
        **dims,
        max_position_embeddings=4096,
        attn_implementation=ATTENTION[args.attn],
        use_cache=False,
    )
    torch.manual_seed(args.seed)
    # Built on the device in the target dtype: a float32 7B copy would need 27 GB.
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    if args.gradient_checkpointing:
        enable_checkpointing(model)
    if args.lora if lora is None else lora:
        model = add_lora(model)
    return model


def backbone_config(name: str) -> Any:
    """``conf/backbone/<name>.yaml`` as an OmegaConf node.

    Raises:
        FileNotFoundError: naming the missing file and the backbones that exist.
    """
    from omegaconf import OmegaConf

    path = REPO / "conf" / "backbone" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no backbone config {path} (available: {', '.join(available)})")
    conf = OmegaConf.load(path)
    # A global-package file (``# @package _global_``) holds the node under ``backbone:``.
    return conf.backbone if "kind" not in conf and "backbone" in conf else conf


def load_backbone_model(
    name: str,
    datamodule: Any,
    *,
    cache_dir: Path,
    model_dir: str | None = None,
    dtype: str | None = None,
    attn: str | None = None,
    gradient_checkpointing: bool | None = None,
    tokenizer: str | None = None,
) -> tuple[nn.Module, Any, Any]:
    """A project backbone through :func:`recpo.models.backbone.load_backbone`, without LoRA.

    The settings given replace the config's; LoRA, when wanted, is added by the
    caller (a reference copy of the base weights may be taken first).

    Returns:
        ``(model, tokenizer, config)``.
    """
    from recpo.models.backbone import load_backbone

    cfg = backbone_config(name)
    if tokenizer is not None and "tokenizer" in cfg:
        cfg.tokenizer = tokenizer
    if dtype is not None:
        cfg.dtype = dtype
    if attn is not None:
        cfg.attn_implementation = ATTENTION[attn]
    if gradient_checkpointing is not None:
        cfg.gradient_checkpointing = gradient_checkpointing
    cfg.finetune = "full"
    backbone = load_backbone(
        cfg,
        model_dir=model_dir,
        cache_dir=str(cache_dir),
        titles=list(datamodule.catalog.names.values()),
        texts=datamodule.tokenizer_texts(),
    )
    return backbone.model, backbone.tokenizer, cfg


def split_parameters(model: nn.Module) -> tuple[int, int]:
    """``(N_body, N_head)``: parameters of the decoder without its input embedding, and
    of the output embedding (the LM head, counted even when tied to the input one).

    LoRA weights (inside a peft model's layers) count in ``N_body``.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    embedding = causal_lm.get_input_embeddings().weight
    body = sum(p.numel() for p in causal_lm.get_decoder().parameters() if p is not embedding)
    head = causal_lm.get_output_embeddings().weight.numel()
    return body, head


def parameter_bytes(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(
        p.numel() * p.element_size()
        for p in module.parameters()
        if p.requires_grad or not trainable_only
    )


# ---------------------------------------------------------------------------- data


def default_data_dir() -> Path:
    """``$RECPO_DATA_DIR`` if set, else the shared data folder beside the checkout."""
    value = os.environ.get("RECPO_DATA_DIR")
    return Path(value).expanduser() if value else DEFAULT_DATA_DIR


def default_cache_dir() -> Path:
    """``$RECPO_CACHE_DIR`` if set, else ``.cache`` in the checkout."""
    value = os.environ.get("RECPO_CACHE_DIR")
    return Path(value).expanduser() if value else REPO / ".cache"


def lastfm_datamodule(data_dir: Path, num_negatives: int, seed: int) -> Any:
    """A ``RecDataModule`` with the source settings of ``conf/data/lastfm.yaml``."""
    from omegaconf import OmegaConf

    from recpo.data import RecDataModule

    conf = OmegaConf.load(REPO / "conf" / "data" / "lastfm.yaml")
    source = OmegaConf.to_container(conf.source, resolve=False)
    source["data_dir"] = str(data_dir)  # replaces the ${paths.data_dir} interpolation
    return RecDataModule(source=source, domain=conf.domain, num_negatives=num_negatives, seed=seed)


def load_datamodule(
    data_dir: Path | None, synthetic: bool, cache_dir: Path, num_negatives: int, seed: int
) -> tuple[Any, str]:
    """Real LastFM when ``<data dir>/lastfm`` exists (unless ``synthetic``), else the
    embedded synthetic dataset; loaded, with a one-line description of which."""
    from recpo.data import RecDataModule
    from recpo.data.synthetic import read_synthetic

    data_dir = data_dir or default_data_dir()
    if not synthetic and (data_dir / "lastfm").is_dir():
        datamodule = lastfm_datamodule(data_dir, num_negatives, seed)
        description = f"real LastFM training rows ({data_dir / 'lastfm'})"
    else:
        reason = "--synthetic" if synthetic else f"no LastFM data at {data_dir / 'lastfm'}"
        source = {"reader": read_synthetic, "name": "synthetic", "cache_dir": str(cache_dir)}
        datamodule = RecDataModule(source=source, num_negatives=num_negatives, seed=seed)
        description = f"synthetic dataset ({reason})"
    datamodule.load()
    return datamodule, description


def dataset_tokenizers(datamodule: Any, names: list[str]) -> dict[str, Any]:
    """The tokenizers the tiny backbone builds from the dataset's prompts and titles
    (``bpe``: byte-level BPE of 8000 tokens; ``title``: one token per item title)."""
    from recpo.models.tiny import build_bpe_tokenizer, build_title_tokenizer, to_hf_tokenizer

    titles = list(datamodule.catalog.names.values())
    texts = datamodule.tokenizer_texts()
    builders = {
        "bpe": lambda: build_bpe_tokenizer(titles, texts, BPE_VOCAB_SIZE),
        "title": lambda: build_title_tokenizer(titles, texts),
    }
    return {name: to_hf_tokenizer(builders[name]()) for name in names}


def sample_rows(datamodule: Any, rows: int, seed: int) -> list[Any]:
    """``rows`` training examples in ``preference`` mode, drawn with ``seed``."""
    dataset = datamodule.dataset_for("train", "preference")
    gen = torch.Generator().manual_seed(seed)
    return [dataset[int(i)] for i in torch.randperm(len(dataset), generator=gen)[:rows]]


def draw_lengths(spec: dict, key: str, size: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Lengths resampled from observed ones (``spec[key]``), else uniform in ``spec[key_range]``."""
    if key in spec:
        observed = torch.tensor(spec[key])
        return observed[torch.randint(len(observed), size, generator=gen)]
    low, high = spec[f"{key}_range"]
    return torch.randint(low, high + 1, size, generator=gen)


def make_synthetic_batch(
    spec: dict, batch: int, num_answers: int, vocab_size: int, seed: int, device: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Left-padded prompts and right-padded answers of drawn lengths, random ids.

    Args:
        spec: ``prompt`` / ``answer`` lists of observed lengths, or inclusive
            ``prompt_range`` / ``answer_range`` pairs.

    Returns:
        ``prompt_ids, prompt_mask`` ``(B, P)`` and ``answer_ids, answer_mask`` ``(B, N, A)``.
    """
    gen = torch.Generator().manual_seed(seed)
    prompt_lens = draw_lengths(spec, "prompt", (batch,), gen)
    answer_lens = draw_lengths(spec, "answer", (batch, num_answers), gen)
    prompt_len, answer_len = int(prompt_lens.max()), int(answer_lens.max())
    prompt_mask = torch.arange(prompt_len) >= prompt_len - prompt_lens[:, None]
    answer_mask = torch.arange(answer_len) < answer_lens[..., None]
    prompt_ids = torch.randint(1, vocab_size, (batch, prompt_len), generator=gen) * prompt_mask
    answer_ids = torch.randint(1, vocab_size, answer_mask.shape, generator=gen) * answer_mask
    tensors = (prompt_ids, prompt_mask.long(), answer_ids, answer_mask.long())
    return tuple(t.to(device) for t in tensors)


# ---------------------------------------------------------------------------- measurement


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    """Wall-clock seconds of ``fn()``, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's C++ side logs a
    ``profiler_start``/``profiler_stop`` line pair there at every use."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_mib(step: Callable[[], Any]) -> float:
    """Peak CPU-allocator bytes held during ``step`` above those held at its start (MiB).

    The running sum of the allocation and free events that ``torch.profiler``
    records with ``profile_memory=True``: tensor memory only (activations, logits,
    gradients, optimizer state created inside ``step``), not the Python heap.
    """
    from torch.profiler import ProfilerActivity, profile

    with silenced_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for frees
        peak = max(peak, live)
    return peak / 2**20


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def machine_description(device: str) -> str:
    """Device, thread count and versions of torch / transformers, for a table heading."""
    import transformers

    if device == "cuda":
        where = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {cpu_model()}, {torch.get_num_threads()} torch thread(s)"
    return (
        f"{where}; torch {torch.__version__}, transformers {transformers.__version__},"
        f" Python {platform.python_version()}"
    )


# ---------------------------------------------------------------------------- authors' selector


def sklearn_available() -> bool:
    try:
        import sklearn.cluster  # noqa: F401
    except ImportError:
        return False
    return True


def _kmeans_numpy(points: Any, k: int, seed: int = 42, iters: int = 300) -> tuple[Any, float]:
    """Labels and SSE of one k-means++ start then Lloyd iterations, in NumPy: the
    algorithm ``KMeans(k, random_state=42)`` runs, without sklearn's overheads."""
    import numpy as np

    rng = np.random.RandomState(seed)
    x = points[:, 0]
    centres = [x[rng.randint(len(x))]]
    for _ in range(1, k):
        distance = np.min((x[:, None] - np.asarray(centres)[None]) ** 2, axis=1)
        total = distance.sum()
        centres.append(x[rng.choice(len(x), p=distance / total)] if total > 0 else x[0])
    centres = np.asarray(centres, dtype=float)
    for _ in range(iters):
        labels = np.argmin((x[:, None] - centres[None]) ** 2, axis=1)
        moved = np.array(
            [x[labels == c].mean() if np.any(labels == c) else centres[c] for c in range(k)]
        )
        if np.allclose(moved, centres, rtol=0, atol=1e-4 * x.var()):
            centres = moved
            break
        centres = moved
    labels = np.argmin((x[:, None] - centres[None]) ** 2, axis=1)
    return labels, float(((x - centres[labels]) ** 2).sum())


def top_cluster_sklearn(values: list[float]) -> tuple[list[int], float]:
    """Indices of the highest-centroid cluster of ``KMeans(min(3, n), random_state=42)``,
    and the clustering's SSE, as the official code fits it per example.

    Without scikit-learn (a GPU machine without it), the same algorithm in NumPy
    (:func:`_kmeans_numpy`), which costs less than sklearn's call: benchmarks say so.
    """
    import numpy as np

    points = np.asarray(values, dtype=float).reshape(-1, 1)
    k = min(3, len(values))
    if sklearn_available():
        from sklearn.cluster import KMeans

        fit = KMeans(n_clusters=k, random_state=42).fit(points)
        labels, sse = fit.labels_, float(fit.inertia_)
    else:
        labels, sse = _kmeans_numpy(points, k)
    means = [points[labels == c].mean() if np.any(labels == c) else -np.inf for c in range(k)]
    return np.flatnonzero(labels == int(np.argmax(means))).tolist(), sse


def authors_select_and_beta(
    chosen: Tensor,
    logps: Tensor,
    *,
    beta0: float = 1.0,
    alpha: float = 0.5,
    gamma: float = 6.0,
) -> tuple[list[list[int]], list[list[float]], list[float]]:
    """Boundary selection + dual-margin β one example at a time, tensor op by tensor op.

    The work the official DynamicPO code does (it is a re-implementation, not that
    code): every log-likelihood pulled to the host with ``.item()``; Stage I by
    comparing tensor elements (``L_k > L_w``, the paper's rule); when it selects
    nothing, ``sklearn.cluster.KMeans(3)`` on the row; then β_j negative by negative
    with scalar tensor arithmetic, returned as Python floats (constants for the loss).

    Args:
        chosen: ``(B,)`` policy log-likelihoods L_w.
        logps: ``(B, K)`` policy log-likelihoods L_k of the negatives (all valid).

    Returns:
        Per row: the selected indices, their β_j (same order), and sklearn's SSE
        (NaN where Stage I fired).
    """
    rows = [[logps[i, k] for k in range(logps.shape[1])] for i in range(logps.shape[0])]
    as_floats = [[float(v.item()) for v in row] for row in rows]  # kept for logging
    selections, betas, sses = [], [], []
    for i, row in enumerate(rows):
        selected = [k for k, value in enumerate(row) if value > chosen[i]]
        sse = math.nan
        if not selected:
            selected, sse = top_cluster_sklearn(as_floats[i])
        rest = [k for k in range(len(row)) if k not in selected] or selected
        easy_mean = sum(row[k] for k in rest) / len(rest)
        row_betas = []
        for k in selected:
            delta_p, delta_n = chosen[i] - row[k], row[k] - easy_mean
            ratio = (delta_p - delta_n - gamma) / (delta_p.abs() + delta_n.abs())
            row_betas.append(float((beta0 * (1 + alpha * torch.tanh(ratio))).item()))
        selections.append(selected)
        betas.append(row_betas)
        sses.append(sse)
    return selections, betas, sses
