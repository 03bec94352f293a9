"""Extraction speed: evalkit vs pytorch-fid vs torch-fidelity on the same images and weights.

What it does (issue 3, "Speed"):

1. writes ``--n`` deterministic, varied PNG images (``--size``², default 1,000 at 256²) into
   ``--data-dir`` (reused when its manifest matches) or a temporary folder;
2. saves seeded random FID-Inception weights in pytorch-fid's state-dict format
   (``pt_inception-2015-12-05-6726825d.pth``), the one file every pipeline loads;
3. checks that the pipelines really run the same network (pool3 of a 299² batch);
4. profiles the parts: per-image decode/resize cost of each pipeline's data path and per-image
   network cost (evalkit's default fused network, the plain module, bf16);
5. times extraction of all images through each pipeline, each in a fresh process with the
   same ``--workers`` and ``--batch-size``, after one untimed warm-up batch:

   * ``evalkit``: :func:`evalkit.features.extract.extract` (no cache), clean resize in the workers;
   * ``pytorch-fid``: ``pytorch_fid.fid_score.get_activations`` with its ``ImagePathDataset``
     and its ``InceptionV3`` (weight download replaced by our file);
   * ``torch-fidelity``: ``torch_fidelity.utils.get_featuresdict_from_dataset`` with its
     ``ImagesPathDataset`` and ``FeatureExtractorInceptionV3`` loading our file through
     ``feature_extractor_weights_path`` (its key names equal pytorch-fid's); its DataLoader
     worker count (hard-wired to ``min(4, 2·cpus)``) is set to ``--workers``;
   * ``evalkit+TOKENS``: variants: ``plain`` (the network module as written, without the
     BN-folded channels_last / oneDNN Graph copy evalkit runs by default),
     ``tf32``/``bf16``/``fp16`` (``precision``), ``legacy`` (``--resize legacy``), ``t1`` (one torch
     thread), ``dev`` / ``wrk`` (``resize_on="device"`` / ``"workers"``; default: device on
     CUDA, workers on CPU), ``pil`` (PIL decodes every PNG, no fast decoder);
   * ``decode``: the decode ceiling: evalkit's DataLoader with the same workers and batch size
     reading, hashing and decoding every image to uint8 and copying it to the device, no
     resize, no network (``decode+pil``: with PIL as the decoder);
   * ``forward`` (+ precision tokens): the forward-only ceiling: ``--n`` images as random
     uint8 batches already on the device, clean resize on the device + the encoder;
   * ``timm-dinov2`` (DINOv2 rows only): timm's DINOv2 of the same size (SDPA attention) at
     224², bf16 autocast, random input on the device: the forward a DINOv2 pipeline can reach.

It prints images/s, the evalkit/pytorch-fid ratio, CPU seconds per image, evalkit's split
between waiting for data (decode/resize) and the network (``meta["timing"]``), and peak memory.
On a GPU (``--device cuda``) it also runs DINOv2 ViT-L/14 (evalkit only) and is meant for
``--n 50000``.

Usage::

    python benchmarks/bench_extract.py                       # CPU, 1,000 images, 2 workers
    python benchmarks/bench_extract.py --n 200 --prototypes  # quick, + plain and bf16 rows
    python benchmarks/bench_extract.py --device cuda --n 50000 --workers 8 --batch-size 200 \\
        --data-dir /data/bench50k --out results_gpu.md
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    Stopwatch,
    child_main,
    describe_machine,
    format_table,
    machine_info,
    measure,
    median,
    ratio,
)

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
DATA_VERSION = "evalkit.bench.images/1"
BASE_PIPELINES = ("evalkit", "pytorch-fid", "torch-fidelity", "decode", "forward",
                  "timm-dinov2")
TOKENS_OF = {"evalkit": None, "decode": {"pil"}, "forward": {"tf32", "bf16", "fp16"},
             "timm-dinov2": set(), "pytorch-fid": set(), "torch-fidelity": set()}
TIMM_DINOV2 = {"vits14": "vit_small_patch14_dinov2", "vitb14": "vit_base_patch14_dinov2",
               "vitl14": "vit_large_patch14_dinov2", "vitg14": "vit_giant_patch14_dinov2"}
PROTOTYPES = ("evalkit+plain", "evalkit+bf16")
VARIANT_TOKENS = {"plain", "tf32", "bf16", "fp16", "legacy", "t1", "dev", "wrk", "pil"}
# Seconds between samples of the process tree's PSS during a timed extraction. Reading PSS
# walks the target's page tables under its memory-map lock: every 0.2 s it slowed evalkit's
# extraction by 15 % here (22.3 vs 26.0 images/s), so sample rarely; runs last >= 40 s.
MEM_SAMPLE_S = 2.0


# ============================================================================ data

def make_image(index: int, size: int, seed: int):
    """Image ``index`` of the benchmark set: gradient, shapes, a texture patch, mild noise.

    Deterministic in (seed, index); content varies so PNG sizes and decode costs resemble
    generated samples rather than flat test patterns.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    base = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None])
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 20))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.6, 2) * size
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.ellipse(box, fill=color)
        elif kind == 1:
            draw.rectangle(box, fill=color)
        elif kind == 2:
            pts = [tuple(float(v) for v in rng.uniform(0, size, 2)) for _ in range(3)]
            draw.polygon(pts, fill=color)
        else:
            draw.line(box, fill=color, width=int(rng.integers(1, 8)))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.5))))
    arr = np.asarray(img).astype(np.float32)
    ps = int(rng.integers(size // 8, size // 2))  # a textured patch (upsampled noise)
    coarse = rng.uniform(0, 255, (max(ps // 8, 2), max(ps // 8, 2), 3)).astype(np.uint8)
    patch = np.asarray(Image.fromarray(coarse).resize((ps, ps), Image.BICUBIC), np.float32)
    py, px = rng.integers(0, size - ps + 1, 2)
    arr[py:py + ps, px:px + ps] = 0.5 * arr[py:py + ps, px:px + ps] + 0.5 * patch
    arr += rng.normal(0, float(rng.uniform(1, 6)), arr.shape)  # sensor-like noise
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _write_one(job):
    from PIL import Image

    index, size, seed, folder = job
    Image.fromarray(make_image(index, size, seed)).save(os.path.join(folder, f"{index:06d}.png"))


def ensure_images(folder: Path, n: int, size: int, seed: int, procs: int,
                  unique: int | None = None) -> float:
    """Write the image set unless ``folder`` already holds exactly it; returns seconds spent.

    With ``unique`` < n, only the first ``unique`` images are drawn and image i is a copy of
    image i mod ``unique`` (same decode cost per file, a fraction of the time to make them).
    """
    manifest = folder / "MANIFEST.json"
    unique = n if unique is None else max(1, min(unique, n))
    want = {"version": DATA_VERSION, "n": n, "size": size, "seed": seed}
    if unique < n:
        want["unique"] = unique
    if manifest.is_file() and json.loads(manifest.read_text()) == want:
        return 0.0
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    jobs = [(i, size, seed, str(folder)) for i in range(unique)]
    with Pool(max(1, procs)) as pool:
        for _ in pool.imap_unordered(_write_one, jobs, chunksize=16):
            pass
    for i in range(unique, n):
        shutil.copyfile(folder / f"{i % unique:06d}.png", folder / f"{i:06d}.png")
    manifest.write_text(json.dumps(want))  # not an image: every pipeline ignores it
    return time.perf_counter() - t0


def image_files(folder: str) -> list[str]:
    """The PNG files of the set, sorted (the order evalkit's directory source uses)."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))


# ============================================================================ child tasks

def _device(name: str):
    from evalkit.features.extract import resolve_device

    return resolve_device(name)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def task_prepare(task: dict) -> dict:
    """Write seeded random FID-Inception weights (pytorch-fid's format) and check that the
    three pipelines' networks give the same pool3 on one 299² batch."""
    import torch

    from evalkit.encoders import inception as I
    from evalkit.encoders.weights import build_module

    path = Path(task["weights"])
    if not path.is_file():
        net = build_module(I.FIDInceptionV3, random_init=True, init=I._init_random,
                           seed=task["seed"])
        g = torch.Generator().manual_seed(task["seed"] + 1)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))
                    m.running_mean.copy_(0.05 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=g))
        sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        tmp = path.with_suffix(".tmp")
        torch.save(sd, tmp)
        os.replace(tmp, path)
    x = torch.randint(0, 256, (4, 3, 299, 299), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    with torch.inference_mode():
        ours = _evalkit_encoder("inception", str(path), "clean")(x.float())["features"]
        pfid = _pytorch_fid_model(str(path))(x.float() / 255)[0].flatten(1)
        tfid = _torch_fidelity_model(str(path))(x)[0]
    scale = pfid.abs().max().item()
    return {"weights": str(path), "pool3_scale": scale,
            "evalkit_vs_pytorch_fid": (ours - pfid).abs().max().item() / scale,
            "torch_fidelity_vs_pytorch_fid": (tfid - pfid).abs().max().item() / scale}


def _evalkit_encoder(encoder: str, weights: str | None, resize: str, arch: str | None = None):
    from evalkit.encoders import build_encoder

    if encoder == "inception":
        return build_encoder("inception", weights=weights, resize=resize)
    return build_encoder(encoder, arch, weights, resize=resize, random_init=weights is None)


def _pytorch_fid_model(weights: str):
    import pytorch_fid.inception as pfi
    import torch

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *a, **k: torch.load(weights, map_location="cpu")
    try:
        return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfi.load_state_dict_from_url = original


def _torch_fidelity_model(weights: str):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                       feature_extractor_weights_path=weights).eval()


def apply_variants(encoder, tokens: set[str]):
    """``plain``: run the network module as written (``fast=False``), i.e. without evalkit's
    BN-folded channels_last copy (and, on CPU in fp32, its oneDNN Graph fusion)."""
    if "plain" in tokens and hasattr(encoder, "fast"):
        encoder.fast = False
    return encoder


def _parse_pipeline(name: str) -> tuple[str, set[str]]:
    base, *tokens = name.split("+")
    allowed = VARIANT_TOKENS if TOKENS_OF.get(base) is None else TOKENS_OF[base]
    bad = set(tokens) - allowed
    if base not in BASE_PIPELINES or bad:
        raise SystemExit(f"unknown pipeline {name!r}: use {', '.join(BASE_PIPELINES)} or "
                         f"evalkit+TOKENS with tokens {', '.join(sorted(VARIANT_TOKENS))}")
    return base, set(tokens)


def task_extract(task: dict) -> dict:
    """Time one pipeline over every image (the model is built and warmed up first)."""
    import torch

    base, tokens = _parse_pipeline(task["pipeline"])
    if "t1" in tokens:
        torch.set_num_threads(1)
    dev = _device(task["device"])
    with Stopwatch() as setup:
        run = {"evalkit": _setup_evalkit, "pytorch-fid": _setup_pytorch_fid,
               "torch-fidelity": _setup_torch_fidelity, "decode": _setup_decode,
               "forward": _setup_forward, "timm-dinov2": _setup_timm_dinov2}[base](
                   task, tokens, dev)
    with Stopwatch() as sw:
        extra = run()
        _sync(dev)
    n = task["n"]
    out = {"pipeline": task["pipeline"], "encoder": task["encoder"], "n": n,
           "setup_s": round(setup.wall_s, 3), "extract_s": round(sw.wall_s, 3),
           "extract_cpu_s": round(sw.cpu_s, 3), "images_per_s": n / sw.wall_s,
           "cpu_ms_per_image": 1000 * sw.cpu_s / n, "torch_threads": torch.get_num_threads()}
    if dev.type == "cuda":
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    out.update(extra)
    return out


def _setup_evalkit(task, tokens, dev):
    import torch

    from evalkit.features.extract import extract
    from evalkit.images.sources import resolve_source

    resize = "legacy" if "legacy" in tokens else "clean"
    from evalkit.features.extract import precision_context

    precision = next((t for t in ("bf16", "fp16", "tf32") if t in tokens), "fp32")
    encoder = _evalkit_encoder(task["encoder"], task.get("weights"), resize, task.get("arch"))
    size = encoder.preprocess.size if resize == "clean" else task["size"]
    warm = torch.rand(task["batch_size"], 3, size, size, device=dev) * 255
    encoder = apply_variants(encoder.to(dev), tokens)
    src = resolve_source(task["images"])
    with torch.inference_mode(), precision_context(dev, precision):
        encoder(warm)
    _sync(dev)

    resize_on = "device" if "dev" in tokens else "workers" if "wrk" in tokens else "auto"
    _choose_decoder(tokens)

    def run():
        fs = extract(src, encoder, batch_size=task["batch_size"], device=dev,
                     workers=task["workers"], precision=precision, quiet=True,
                     resize_on=resize_on)
        assert fs.n == task["n"] and all(v.shape[0] == fs.n for v in fs.arrays.values())
        return {"timing": fs.meta["timing"]}
    return run


def _choose_decoder(tokens) -> None:
    """``pil`` token: PIL decodes every PNG (the workers fork after this, so they inherit it)."""
    if "pil" in tokens:
        from evalkit.images import decode as imageio
        imageio._fast_png = False


def _setup_decode(task, tokens, dev):
    """The decode ceiling: evalkit's loader (read + sha256 + decode to uint8, same workers,
    same batches, pinned on CUDA) and the copy to the device; nothing else."""
    from evalkit.features.extract import _loader
    from evalkit.images.sources import resolve_source

    _choose_decoder(tokens)
    src = resolve_source(task["images"])

    def run():
        seen = 0
        for batch in _loader(src, None, list(range(len(src))), task["batch_size"],
                             task["workers"], dev):
            for _, images in batch["groups"]:
                images.to(dev, non_blocking=True)
                seen += images.shape[0]
        _sync(dev)
        assert seen == task["n"]
        return {}
    return run


def _setup_forward(task, tokens, dev):
    """The forward-only ceiling: random uint8 batches already on the device, device resize +
    the encoder, ``--n`` images in batches of ``--batch-size``."""
    import torch

    from evalkit.features.extract import precision_context
    from evalkit.images.resize import resize_batch

    precision = next((t for t in ("bf16", "fp16", "tf32") if t in tokens), "fp32")
    encoder = _evalkit_encoder(task["encoder"], task.get("weights"), "clean",
                               task.get("arch")).to(dev).eval()
    b, size = task["batch_size"], task["size"]
    x = torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0)).to(dev)

    def step(rows: int):
        with torch.inference_mode():
            inp = resize_batch(x[:rows], encoder.preprocess)
            if dev.type == "cuda":
                inp = inp.contiguous(memory_format=torch.channels_last)
            with precision_context(dev, precision):
                out = encoder(inp)
            return out["features"].float().cpu()
    step(b)
    _sync(dev)

    def run():
        done = 0
        while done < task["n"]:
            rows = min(b, task["n"] - done)
            step(rows)
            done += rows
        return {}
    return run


def _setup_timm_dinov2(task, tokens, dev):
    """timm's DINOv2 (fused SDPA attention) at 224², bf16 autocast, random input on the
    device: the forward speed a DINOv2 pipeline is compared with."""
    import timm
    import torch

    name = TIMM_DINOV2[task.get("arch") or "vitl14"]
    model = timm.create_model(name, pretrained=False, img_size=224, num_classes=0).to(dev).eval()
    b = task["batch_size"]
    x = torch.rand(b, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
        model(x)
    _sync(dev)

    def run():
        done = 0
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
            while done < task["n"]:
                rows = min(b, task["n"] - done)
                model(x[:rows]).float().cpu()
                done += rows
        return {}
    return run


def _setup_pytorch_fid(task, tokens, dev):
    import torch
    from pytorch_fid.fid_score import get_activations

    model = _pytorch_fid_model(task["weights"]).to(dev)
    files = image_files(task["images"])
    with torch.no_grad():
        model(torch.rand(task["batch_size"], 3, task["size"], task["size"], device=dev))
    _sync(dev)

    def run():
        acts = get_activations(files, model, batch_size=task["batch_size"], dims=2048,
                               device=dev, num_workers=task["workers"])
        assert acts.shape == (task["n"], 2048)
        return {}
    return run


def _setup_torch_fidelity(task, tokens, dev):
    import torch
    import torch_fidelity.utils as tfu
    from torch.utils.data import DataLoader
    from torch_fidelity.datasets import ImagesPathDataset, TransformPILtoRGBTensor
    from torchvision.transforms import Compose

    model = _torch_fidelity_model(task["weights"]).to(dev)
    dataset = ImagesPathDataset(image_files(task["images"]), Compose([TransformPILtoRGBTensor()]))
    workers = task["workers"]
    tfu.DataLoader = lambda *a, **k: DataLoader(*a, **{**k, "num_workers": workers})
    with torch.no_grad():
        model(torch.randint(0, 256, (task["batch_size"], 3, task["size"], task["size"]),
                            dtype=torch.uint8, device=dev))
    _sync(dev)

    def run():
        feats = tfu.get_featuresdict_from_dataset(dataset, model, task["batch_size"],
                                                  dev.type == "cuda", False, False)
        assert feats["2048"].shape == (task["n"], 2048)
        return {}
    return run


def _best_pass_ms(fn, count: int, passes: int = 2) -> float:
    """Milliseconds per item of ``fn(i)`` over ``count`` items, the faster of ``passes`` passes
    (the machine may be shared: the faster pass is the one less disturbed)."""
    fn(0)
    best = float("inf")
    for _ in range(passes):
        with Stopwatch() as sw:
            for i in range(count):
                fn(i)
        best = min(best, sw.wall_s)
    return 1000 * best / count


def task_profile(task: dict) -> dict:
    """Per-image cost of each data path and of its parts (one process, one torch thread as in
    a DataLoader worker), and of
    each network variant (best of ``reps`` batches after a warm-up, default torch threads),
    in milliseconds."""
    import hashlib

    import numpy as np
    import torch
    from PIL import Image
    from pytorch_fid.fid_score import ImagePathDataset
    from torch_fidelity.datasets import ImagesPathDataset, TransformPILtoRGBTensor
    from torchvision.transforms import ToTensor

    from evalkit.features.extract import _Images
    from evalkit.images.decode import decode_image, decode_rgb, to_rgb_uint8
    from evalkit.images.resize import clean_resize
    from evalkit.images.sources import resolve_source

    dev = _device(task["device"])
    files = image_files(task["images"])[:task["m"]]
    m = len(files)
    enc = _evalkit_encoder("inception", task["weights"], "clean")
    legacy = _evalkit_encoder("inception", task["weights"], "legacy")
    src = resolve_source(task["images"])
    blobs = [Path(f).read_bytes() for f in files]
    rgbs = [to_rgb_uint8(decode_image(b, f)) for b, f in zip(blobs, files)]
    evalkit_ds, legacy_ds = _Images(src, (enc.preprocess,)), _Images(src, (legacy.preprocess,))
    uint8_ds = _Images(src, None)
    pfid_ds = ImagePathDataset(files, ToTensor())
    tfid_ds = ImagesPathDataset(files, TransformPILtoRGBTensor())
    to_tensor = ToTensor()
    data = {
        "evalkit: all (read+sha256+decode+RGB+clean resize 299)": lambda i: evalkit_ds[i],
        "evalkit: read file": lambda i: Path(files[i]).read_bytes(),
        "evalkit: sha256 of the bytes": lambda i: hashlib.sha256(blobs[i]).hexdigest(),
        "evalkit device path: all (read+sha256+decode to uint8)": lambda i: uint8_ds[i],
        "evalkit: PNG decode + RGB (decode_rgb: fast decoder)": lambda i: decode_rgb(blobs[i],
                                                                                      files[i]),
        "evalkit: PNG decode + RGB (PIL)": lambda i: to_rgb_uint8(decode_image(blobs[i],
                                                                               files[i])),
        "evalkit: clean resize to 299 (3 float32 PIL bicubic)":
            lambda i: clean_resize(rgbs[i], 299),
        "evalkit legacy: all (read+sha256+decode, no resize)": lambda i: legacy_ds[i],
        "pytorch-fid: all (open+decode+ToTensor)": lambda i: pfid_ds[i],
        "pytorch-fid: ToTensor only": lambda i: to_tensor(Image.fromarray(rgbs[i])),
        "torch-fidelity: all (open+decode+pil_to_tensor)": lambda i: tfid_ds[i],
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in DataLoader workers (torch gives each worker one thread)
    data = {name: _best_pass_ms(fn, m) for name, fn in data.items()}
    torch.set_num_threads(threads)
    b, size = task["batch_size"], task["size"]
    x299 = torch.rand(b, 3, 299, 299, device=dev) * 255
    xnat = torch.rand(b, 3, size, size, device=dev)
    plain = apply_variants(_evalkit_encoder("inception", task["weights"], "clean").to(dev),
                           {"plain"})

    def build_nets() -> dict:  # built per thread setting: a jit trace specialises to it
        return {
            "pytorch-fid InceptionV3 (+ bilinear resize in-net)":
                (_pytorch_fid_model(task["weights"]).to(dev), xnat, None),
            "torch-fidelity InceptionV3 (+ TF1 bilinear resize in-net)":
                (_torch_fidelity_model(task["weights"]).to(dev),
                 (xnat * 255).to(torch.uint8), None),
            "evalkit inception, plain module (fast=False)": (plain, x299, None),
            "evalkit inception (BN folded, NHWC, CPU: oneDNN Graph)": (enc.to(dev), x299, None),
            "evalkit inception +bf16 autocast": (enc, x299, torch.bfloat16),
        }
    network = _time_networks(build_nets(), dev, task["reps"])
    network_1t = None
    if dev.type == "cpu":  # one thread: no OpenMP barrier stalls when the machine is shared
        torch.set_num_threads(1)
        network_1t = _time_networks(build_nets(), dev, task["reps"])
        torch.set_num_threads(threads)
    return {"data_ms_per_image": data, "network_ms_per_image": network,
            "network_1thread_ms_per_image": network_1t,
            "torch_threads": torch.get_num_threads(), "images": m, "net_batch": b,
            "reps": task["reps"], "npix": int(np.prod(rgbs[0].shape))}


def _time_networks(nets: dict, dev, reps: int) -> dict:
    """name -> {"wall": best wall ms/img, "cpu": best process-CPU ms/img}, variants
    interleaved so that a change of load hits all of them."""
    import torch

    walls = {name: [] for name in nets}
    cpus = {name: [] for name in nets}
    with torch.inference_mode():
        for model, x, dtype in nets.values():  # warm-up (twice: TorchScript fuses on run 2)
            for _ in range(2):
                with _autocast(dev, dtype):
                    model(x)
        for _ in range(reps):
            for name, (model, x, dtype) in nets.items():
                c0, t0 = time.process_time(), time.perf_counter()
                with _autocast(dev, dtype):
                    model(x)
                _sync(dev)
                walls[name].append(time.perf_counter() - t0)
                cpus[name].append(time.process_time() - c0)
    n = next(iter(nets.values()))[1].shape[0]
    return {name: {"wall": 1000 * min(walls[name]) / n, "cpu": 1000 * min(cpus[name]) / n}
            for name in nets}


def _autocast(dev, dtype):
    import contextlib

    import torch

    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


HANDLERS = {"prepare": task_prepare, "extract": task_extract, "profile": task_profile}


# ============================================================================ parent

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="number of images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--unique", type=int, default=None,
                   help="draw only this many distinct images; the rest are file copies")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers for every pipeline (default: 2 on CPU, "
                        "min(8, cpus) on CUDA)")
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:i | auto")
    p.add_argument("--encoders", default=None,
                   help="comma list: inception, dinov2 (default: inception on CPU, "
                        "inception,dinov2 on CUDA; dinov2 runs evalkit pipelines only)")
    p.add_argument("--dinov2-arch", default="vitl14", help="DINOv2 variant for the dinov2 rows")
    p.add_argument("--dinov2-weights", default=None,
                   help="DINOv2 weights file (default: seeded random weights)")
    p.add_argument("--pipelines", default=",".join(BASE_PIPELINES),
                   help="comma list of pipelines (evalkit, pytorch-fid, torch-fidelity, "
                        "evalkit+TOKENS with tokens plain tf32 bf16 fp16 legacy t1 dev wrk "
                        "pil, decode[+pil], forward[+bf16...], timm-dinov2)")
    p.add_argument("--prototypes", action="store_true",
                   help="also time " + ", ".join(PROTOTYPES))
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat every pipeline; order alternates, medians are reported")
    p.add_argument("--no-profile", action="store_true", help="skip the per-part profile")
    p.add_argument("--profile-images", type=int, default=100,
                   help="images for the data-path profile")
    p.add_argument("--profile-reps", type=int, default=3,
                   help="timed batches per network variant in the profile (best is kept)")
    p.add_argument("--data-dir", default=None,
                   help="where to keep images and weights (reused across runs); default: a "
                        "temporary folder removed at the end")
    p.add_argument("--seed", type=int, default=0, help="seed of the images and the weights")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    p.add_argument("--out", default=None, help="also write the report (Markdown) here")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.workers is None:
        args.workers = min(8, os.cpu_count() or 1) if cuda else 2
    if args.encoders is None:
        args.encoders = "inception,dinov2" if cuda else "inception"
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    pipelines = [s.strip() for s in args.pipelines.split(",") if s.strip()]
    if args.prototypes:
        pipelines += [pp for pp in PROTOTYPES if pp not in pipelines]
    for name in pipelines:
        _parse_pipeline(name)
    args.pipelines = pipelines
    return args


def plan(args) -> list[tuple[str, str]]:
    """(encoder, pipeline) pairs to time; DINOv2 has no pytorch-fid/torch-fidelity pipeline
    and no Inception-only variants (plain, legacy)."""
    pairs = []
    for enc in args.encoders:
        for pipe in args.pipelines:
            base, tokens = _parse_pipeline(pipe)
            inception_only = {"plain", "legacy"}
            if base == "decode" and enc != args.encoders[0]:
                continue  # no encoder: once
            if base == "timm-dinov2" and enc != "dinov2":
                continue
            if enc != "inception" and (base in ("pytorch-fid", "torch-fidelity")
                                       or tokens & inception_only):
                continue
            pairs.append((enc, pipe))
    return pairs


def run_all(args, data_dir: Path) -> dict:
    images = data_dir / (f"images_{args.n}_{args.size}_{args.seed}"
                         + (f"_u{args.unique}" if args.unique and args.unique < args.n else ""))
    weights = data_dir / WEIGHTS_NAME
    gen_s = ensure_images(images, args.n, args.size, args.seed, os.cpu_count() or 1,
                          args.unique)
    made = f"made in {gen_s:.1f} s" if gen_s else "reused"
    log(f"images: {args.n} PNG {args.size}² in {images} ({made})")
    script = os.path.abspath(__file__)
    env = {"EVALKIT_CACHE_DIR": str(data_dir / "evalkit-cache")}  # keep ~/.cache untouched
    prep = measure(script, {"kind": "prepare", "weights": str(weights), "seed": args.seed},
                   timeout=args.timeout, env=env)
    _check(prep, "prepare")
    log(f"same network: pool3 max |evalkit - pytorch-fid| / max|pool3| = "
        f"{prep['evalkit_vs_pytorch_fid']:.2e}; torch-fidelity: "
        f"{prep['torch_fidelity_vs_pytorch_fid']:.2e} (its input scaling is (x-128)/128)")
    common = {"images": str(images), "weights": str(weights), "n": args.n, "size": args.size,
              "workers": args.workers, "batch_size": args.batch_size, "device": args.device}
    profile = None
    if not args.no_profile:
        profile = measure(script, {**common, "kind": "profile", "reps": args.profile_reps,
                                   "m": min(args.n, args.profile_images),
                                   "batch_size": min(args.batch_size, 8)},
                          timeout=args.timeout, env=env)
        _check(profile, "profile")
        log("profile done")
    rows = []
    pairs = plan(args)
    for r in range(args.rounds):
        for enc, pipe in (pairs if r % 2 == 0 else pairs[::-1]):
            task = {**common, "kind": "extract", "pipeline": pipe, "encoder": enc,
                    "arch": args.dinov2_arch if enc == "dinov2" else None}
            if enc == "dinov2":
                task["weights"] = args.dinov2_weights
            m = measure(script, task, timeout=args.timeout, env=env, interval=MEM_SAMPLE_S)
            m.update(round=r, encoder=enc, pipeline=pipe)
            rows.append(m)
            log(f"round {r} {enc:9s} {pipe:24s} " + (
                f"{m['images_per_s']:7.2f} img/s  (load {m['load_before']})"
                if not m["error"] else f"FAILED {m['error']}"))
    return {"prepare": prep, "profile": profile, "rows": rows, "images": str(images)}


def _check(m: dict, what: str) -> None:
    if m.get("error"):
        raise SystemExit(f"bench_extract: the {what} step failed: {m['error']}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarize(args, results: dict, info: dict) -> str:
    """The Markdown report: settings, machine, main table, evalkit split, profile."""
    rows = [r for r in results["rows"] if not r.get("error")]
    summary = []
    for enc, pipe in plan(args):
        runs = [r for r in rows if r["encoder"] == enc and r["pipeline"] == pipe]
        if not runs:
            summary.append({"encoder": enc, "pipeline": pipe + " (failed)"})
            continue
        timing = [r.get("timing") or {} for r in runs]
        ips = median([r["images_per_s"] for r in runs])
        summary.append({
            "encoder": enc, "pipeline": pipe, "runs": len(runs), "ips": ips,
            "cpu_ms": median([r["cpu_ms_per_image"] for r in runs]),
            "extract_s": median([r["extract_s"] for r in runs]),
            "data_wait_s": median([t.get("data_wait_s") for t in timing]),
            "forward_s": median([t.get("forward_s") for t in timing]),
            "setup_s": median([r["setup_s"] for r in runs]),
            "main_mb": max(r.get("main_peak_mb") or 0 for r in runs),
            "tree_mb": max(r.get("tree_peak_mb") or 0 for r in runs),
            "gpu_mb": max((r.get("gpu_peak_mb") or 0 for r in runs), default=None) or None,
            "load": median([r.get("load_before") for r in runs]),
        })
    for s in summary:  # per-round ratios against pytorch-fid, then their median
        per_round = []
        for r in range(args.rounds):
            mine = [x for x in rows if x["round"] == r and x["encoder"] == s["encoder"]
                    and x["pipeline"] == s["pipeline"]]
            ref = [x for x in rows if x["round"] == r and x["encoder"] == "inception"
                   and x["pipeline"] == "pytorch-fid"]
            if mine and ref and s["encoder"] == "inception":
                per_round.append(ratio(mine[0]["images_per_s"], ref[0]["images_per_s"]))
        s["vs_pfid"] = median(per_round)
        fwd = [x["images_per_s"] for x in rows if x["encoder"] == s["encoder"]
               and x["pipeline"].startswith("forward")]
        s["vs_forward"] = ratio(s.get("ips"), median(fwd)) if fwd and s.get("ips") else None
        ceiling = [x["images_per_s"] for x in rows if x["pipeline"] == "decode"]
        s["vs_decode"] = ratio(s.get("ips"), median(ceiling)) if ceiling and s.get("ips") \
            else None
        ref_cpu = next((x["cpu_ms"] for x in summary if x["pipeline"] == "pytorch-fid"
                        and x.get("cpu_ms")), None)
        s["cpu_vs_pfid"] = ratio(ref_cpu, s.get("cpu_ms")) if s["encoder"] == "inception" else None
    cols = [("encoder", "encoder"), ("pipeline", "pipeline"), ("ips", "images/s", ".2f"),
            ("vs_pfid", "× pytorch-fid", ".2f"), ("vs_decode", "× decode ceiling", ".2f"),
            ("vs_forward", "× forward ceiling", ".2f"),
            ("cpu_ms", "CPU ms/img", ".0f"),
            ("cpu_vs_pfid", "CPU-efficiency × pytorch-fid", ".2f"),
            ("extract_s", "extract s", ".1f"), ("data_wait_s", "data wait s", ".1f"),
            ("forward_s", "forward s", ".1f"), ("setup_s", "setup s", ".1f"),
            ("main_mb", "main peak MB", ".0f"), ("tree_mb", "tree peak MB (PSS)", ".0f"),
            ("load", "load avg", ".1f")]
    if any(s.get("gpu_mb") for s in summary):
        cols.insert(-1, ("gpu_mb", "GPU peak MB", ".0f"))
    lines = [
        f"Machine: {describe_machine(info)}.",
        f"Settings: {args.n} PNG images {args.size}², batch {args.batch_size}, "
        f"{args.workers} workers, device {args.device}, {args.rounds} round(s), "
        f"one untimed warm-up batch per pipeline, each measurement in a fresh process.",
        f"Same weights: pool3 max |evalkit − pytorch-fid| / max|pool3| = "
        f"{results['prepare']['evalkit_vs_pytorch_fid']:.1e} on a 299² batch.",
        "",
        format_table(summary, cols),
        "",
        "images/s: images / wall time of the extraction call. × pytorch-fid: median over "
        "rounds of the same-round ratio. CPU ms/img: CPU time of the process and its "
        "DataLoader workers per image. data wait / forward: evalkit's meta['timing'] "
        "(main-process seconds waiting for decoded+resized batches / in the network).",
    ]
    prof = results.get("profile")
    if prof:
        drows = [{"part": k, "ms": v} for k, v in prof["data_ms_per_image"].items()]
        one = prof.get("network_1thread_ms_per_image") or {}
        ref = "evalkit inception, plain module (fast=False)"
        nrows = []
        for k, v in prof["network_ms_per_image"].items():
            row = {"part": k, "wall": v["wall"], "cpu": v["cpu"]}
            if k in one:
                row.update(wall1=one[k]["wall"], cpu1=one[k]["cpu"],
                           speed1=ratio(one[ref]["cpu"], one[k]["cpu"]))
            nrows.append(row)
        ncols = [("part", "network"), ("wall", f"wall ms/img ({prof['torch_threads']} thr)", ".1f"),
                 ("cpu", f"CPU ms/img ({prof['torch_threads']} thr)", ".1f")]
        if one:
            ncols += [("wall1", "wall ms/img (1 thr)", ".1f"),
                      ("cpu1", "CPU ms/img (1 thr)", ".1f"),
                      ("speed1", "speed-up vs the plain module (1 thr CPU)", ".2f")]
        lines += ["", f"Data path per image (one process, one torch thread as in a DataLoader "
                      f"worker, {prof['images']} images, faster of 2 passes):", "",
                  format_table(drows, [("part", "data path"), ("ms", "ms/img", ".2f")]),
                  "", f"Network per image ({args.device}, batch {prof['net_batch']}, best of "
                      f"{prof['reps']} interleaved batches after a warm-up; CPU = process CPU "
                      "time, which with one thread is the compute itself and barely depends on "
                      "other load):", "",
                  format_table(nrows, ncols)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    info = machine_info()
    log(f"machine: {describe_machine(info)}")
    if args.device.startswith("cuda") and not info.get("gpu"):
        raise SystemExit(f"bench_extract: --device {args.device}, but torch sees no CUDA GPU here")
    tmp = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="evalkit-bench-extract-")
        data_dir = Path(tmp)
    try:
        results = run_all(args, data_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    report = summarize(args, results, info)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0 if all(not r.get("error") for r in results["rows"]) else 1


if __name__ == "__main__":
    child_main(HANDLERS)
    sys.exit(main())
