"""dgm-eval's encoders: evalkit's extraction vs dgm-eval's pipeline, and the non-square choice.

1. Speed (issue 10): per encoder, images/s of ``evalkit.features.extract.extract`` (clean resize in the
   DataLoader workers, normalisation in the module, evalkit's runtime) against dgm-eval's
   pipeline: a DataLoader whose dataset opens each file with PIL and applies dgm-eval's
   torchvision transform (``Resize``/``CenterCrop``/``ToTensor``/``Normalize``, BEiT's processor
   for data2vec), then the same architecture (random weights: the speed does not depend on
   them). Same images, batch size, DataLoader workers and torch threads; each pipeline in a
   fresh process after two untimed warm-up batches. Prints images/s, the ratio and CPU
   seconds per image.
2. ``--nonsquare``: on non-square images, how far evalkit's default (shorter side to 224 then
   centre crop) and a square resize are from dgm-eval's own ``Resize(224)`` features (aspect
   kept) for swav and simclr (random weights with random BatchNorm statistics; cosine and
   relative L2 distance).

Usage::

    python benchmarks/bench_encoders.py                      # 32 images, 2 threads, 1 worker
    python benchmarks/bench_encoders.py --encoders swav,simclr --n 48
    python benchmarks/bench_encoders.py --nonsquare
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import child_main, describe_machine, format_table, machine_info, measure  # noqa: E402

ENCODERS = ("swav", "simclr", "convnext", "mae", "data2vec")
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def write_images(folder: Path, n: int, h: int, w: int, seed: int = 0) -> None:
    """``n`` photo-like PNGs (smooth colour fields + texture noise), deterministic."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        low = torch.from_numpy(rng.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32))
        img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0].numpy()
        img = img + rng.normal(0, 8, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(
            folder / f"{i:05d}.png")


# ============================================================================ reference side

def dgm_transform(name: str):
    """dgm-eval's transform for ``name`` (PIL image -> normalised tensor)."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(*IMAGENET)]
    if name == "convnext":
        return T.Compose([T.Resize(256, T.InterpolationMode.BICUBIC), T.CenterCrop(224), *norm])
    if name in ("swav", "simclr"):
        return T.Compose([T.Resize(224), *norm])
    if name == "mae":  # its only working path: pil_resize(image, (224, 224)) (clean-fid)
        import numpy as np
        from cleanfid.resize import make_resizer

        resize = make_resizer("PIL", False, "bicubic", (224, 224))
        tail = T.Normalize(*IMAGENET)
        return lambda im: tail(T.functional.to_tensor(resize(np.asarray(im))) / 255)
    if name == "data2vec":
        import transformers

        cls = getattr(transformers, "BeitImageProcessorPil", transformers.BeitImageProcessor)
        proc = cls(size=224, do_center_crop=False)
        return lambda im: proc(im, return_tensors="pt")["pixel_values"][0]
    raise ValueError(name)


def dgm_model(name: str):
    """The architecture dgm-eval runs for ``name`` (random weights), input -> features."""
    import torch

    import evalkit.encoders as E

    if name == "swav":
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        net.conv1.padding = (2, 2)  # SwAV: a 1-px pad layer, then conv1 with padding 2
        net.fc = torch.nn.Identity()
        return lambda x: net.eval()(torch.nn.functional.pad(x, (1, 1, 1, 1)))
    enc = E.build_encoder(name, random_init=True)
    if name == "simclr":
        return lambda x: enc.net(x)[0]  # the module as written, eager
    if name == "convnext":
        m = enc.net
        return lambda x: m.head.flatten(m.head.norm(m.head.global_pool(m.forward_features(x))))
    if name == "mae":
        return lambda x: enc.net.forward_features(x)[:, 0]
    if name == "data2vec":
        return lambda x: enc.model(x).pooler_output
    raise ValueError(name)


class _Files:
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.open(self.files[i]).convert("RGB"))


def run_reference(task: dict) -> dict:
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(task["threads"])
    model = dgm_model(task["encoder"])
    files = sorted(Path(task["data"]).glob("*.png"))
    loader = DataLoader(_Files(files, dgm_transform(task["encoder"])), batch_size=task["batch"],
                        num_workers=task["workers"])
    with torch.no_grad():
        for _ in range(2):  # warm-up
            model(torch.zeros(task["batch"], 3, 224, 224))
        t0 = time.perf_counter()
        n = 0
        for x in loader:
            model(x)
            n += x.shape[0]
    return {"n": n, "seconds": time.perf_counter() - t0}


# ============================================================================ evalkit side

def run_evalkit(task: dict) -> dict:
    import torch

    import evalkit.encoders as E
    from evalkit.features.extract import extract
    from evalkit.images.sources import resolve_source

    torch.set_num_threads(task["threads"])
    enc = E.build_encoder(task["encoder"], random_init=True)
    src = resolve_source(task["data"])
    with torch.inference_mode():
        for _ in range(2):  # warm-up (evalkit's runtime traces conv nets on the first batches)
            enc(torch.zeros(task["batch"], 3, 224, 224))
    t0 = time.perf_counter()
    fs = extract(src, enc, batch_size=task["batch"], workers=task["workers"], device="cpu",
                 quiet=True)
    return {"n": int(fs.arrays["features"].shape[0]), "seconds": time.perf_counter() - t0}


HANDLERS = {"evalkit": run_evalkit, "reference": run_reference}


# ============================================================================ non-square

def nonsquare(n: int = 8) -> None:
    """Cosine / relative distance of evalkit's choices to dgm-eval's aspect-kept features."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    import evalkit.encoders as E
    from evalkit.images.resize import clean_resize

    rows = []
    for name in ("swav", "simclr"):
        enc = E.build_encoder(name, random_init=True)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in enc.net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        mean, std = torch.tensor(IMAGENET[0]).view(3, 1, 1), torch.tensor(IMAGENET[1]).view(3, 1, 1)
        for h, w in ((256, 384), (256, 512)):
            with tempfile.TemporaryDirectory() as tmp:
                write_images(Path(tmp), n, h, w, seed=h + w)
                arrs = [np.asarray(Image.open(p)) for p in sorted(Path(tmp).glob("*.png"))]
            tf = dgm_transform(name)

            def feats(xs, net=enc.net):
                with torch.no_grad():
                    return torch.cat([net(x[None])[0] for x in xs])

            dgm = feats([tf(Image.fromarray(a)) for a in arrs])
            crop = feats([(torch.from_numpy(clean_resize(a, 224, crop=True)) / 255 - mean) / std
                          for a in arrs])
            square = feats([(torch.from_numpy(clean_resize(a, 224)) / 255 - mean) / std
                            for a in arrs])
            for label, f in (("centre crop (default)", crop), ("square resize", square)):
                cos = F.cosine_similarity(f, dgm).mean().item()
                rel = ((f - dgm).norm(dim=1) / dgm.norm(dim=1)).mean().item()
                rows.append({"encoder": name, "image": f"{w}x{h}", "evalkit": label,
                             "cosine": cos, "rel_l2": rel})
    print(format_table(rows, [("encoder", "encoder"), ("image", "image (W×H)"),
                              ("evalkit", "evalkit resize"), ("cosine", "mean cosine", ".5f"),
                              ("rel_l2", "mean rel. L2", ".4f")]))


# ============================================================================ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default=",".join(ENCODERS))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--nonsquare", action="store_true")
    args = ap.parse_args()
    if args.nonsquare:
        nonsquare()
        return
    print(describe_machine(machine_info()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.n, args.size, args.size)
        for name in args.encoders.split(","):
            res = {}
            for side in ("reference", "evalkit"):
                task = {"kind": side, "encoder": name, "data": tmp, "batch": args.batch,
                        "threads": args.threads, "workers": args.workers}
                m = measure(__file__, task, env={"OMP_NUM_THREADS": str(args.threads)})
                if m.get("error"):
                    print(f"{name} {side}: {m['error']}", file=sys.stderr)
                res[side] = m
            ev, ref = res["evalkit"], res["reference"]
            ips = {k: v["n"] / v["seconds"] if v.get("seconds") else None for k, v in res.items()}
            rows.append({"encoder": name, "evalkit": ips["evalkit"], "dgm": ips["reference"],
                         "ratio": (ips["evalkit"] / ips["reference"]
                                   if ips["evalkit"] and ips["reference"] else None),
                         "cpu_ev": ev["process_cpu_s"] / args.n,
                         "cpu_ref": ref["process_cpu_s"] / args.n})
            print(f"{name}: evalkit {ips['evalkit']:.2f} img/s, dgm-eval pipeline "
                  f"{ips['reference']:.2f} img/s", file=sys.stderr, flush=True)
    print(f"\n{args.n} images {args.size}², batch {args.batch}, {args.threads} torch threads, "
          f"{args.workers} DataLoader worker(s), random weights")
    print(format_table(rows, [("encoder", "encoder"), ("evalkit", "evalkit img/s", ".2f"),
                              ("dgm", "dgm-eval pipeline img/s", ".2f"),
                              ("ratio", "ratio", ".2f"),
                              ("cpu_ev", "evalkit CPU s/img", ".2f"),
                              ("cpu_ref", "dgm-eval CPU s/img", ".2f")]))


if __name__ == "__main__":
    if not child_main(HANDLERS):
        main()
