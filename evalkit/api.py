"""The Python API: `evalkit.score(samples, ref, ...)`, the scoring entry point `evalkit score`
wraps."""
from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.encoders.custom import encoder_name
from evalkit.errors import InputError, ProtocolWarning
from evalkit.features.conditions import attach_prompts
from evalkit.features.distributed import is_main, launch_env
from evalkit.features.featureset import FeatureSet, validate
from evalkit.features.generate import GeneratedSource, image_grid, load_generator
from evalkit.features.loader import (
    features_for_each,
    load_features,
    load_generated,
    load_generated_many,
)
from evalkit.features.options import ExtractOptions
from evalkit.files.guards import check_outputs
from evalkit.formatting import format_number
from evalkit.images.sources import RowSample, is_source_arg, stats_npz_keys
from evalkit.metrics import get_metric
from evalkit.refs.pull import ensure
from evalkit.refs.statsfiles import load_stats
from evalkit.refs.store import published_stats, resolve_reference, stored_encoders
from evalkit.results.outputs import (
    PER_CLASS_METRICS,
    per_class_rows,
    per_sample_path,
    write_per_class_csv,
    write_per_sample_csv,
)
from evalkit.results.record import build_record, write_records
from evalkit.scoring.intervals import check_rounds
from evalkit.scoring.plan import moment_arrays, parse_metric_list
from evalkit.scoring.protocols import resolve_protocol
from evalkit.scoring.rng import RunRNG
from evalkit.scoring.run import row_sample, stream_name
from evalkit.scoring.score import ScoreConfig, score_set

SourceLike = str | os.PathLike | FeatureSet | np.ndarray


@dataclass
class Result:
    """One scored sample set: ``metrics`` (key -> value) and the full result ``record``."""

    record: dict[str, Any]
    scored: FeatureSet | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        return self.record["metrics"]

    @property
    def skipped(self) -> dict[str, str]:
        """Metrics that did not run, with the reason (e.g. ``{"is": "needs 'logits' arrays ..."}``)."""
        return self.record.get("skipped") or {}

    @property
    def intervals(self) -> dict[str, list[float]]:
        """``--bootstrap`` intervals, key -> [lo, hi] (empty without bootstrap)."""
        return self.record.get("metrics_ci") or {}

    def __getitem__(self, key: str) -> float:
        return self.record["metrics"][key]

    def __repr__(self) -> str:  # the record is long: name, metrics and what was skipped
        values = ", ".join(f"{k}={format_number(v)}" for k, v in self.metrics.items())
        skipped = f", skipped={sorted(self.skipped)}" if self.skipped else ""
        return f"Result({self.record.get('name')!r}: {values}{skipped})"


def load_source(source: SourceLike, options: ExtractOptions, *, role: str = "samples",
                ref_dir: str | None = None, sample: RowSample | None = None,
                moments: Sequence[str] | None = None) -> FeatureSet:
    """Any source (path, feature array, FeatureSet, registered reference name) -> FeatureSet.

    ``sample`` (``--nsample``): a source read from a path (images or a feature file) reads only
    the rows it draws (:func:`evalkit.features.loader.load_features`); the other kinds are
    subsampled by :func:`evalkit.scoring.score.score_set` with the same rule.
    ``moments``: for a generator, the outputs to reduce to their mean and covariance as they
    stream, keeping no rows (:func:`evalkit.features.loader.load_generated`)."""
    if isinstance(source, FeatureSet):
        return source
    if isinstance(source, GeneratedSource):
        return load_generated(source, options, moments=moments)
    if isinstance(source, np.ndarray):
        fs = FeatureSet({"features": source}, source=f"<array {role}>")
        validate(fs, fs.source)
        return fs
    path = Path(source)
    if is_source_arg(source):
        if role == "reference" and stats_npz_keys(path) is not None:
            return load_stats(path)
        return load_features(str(path), options, sample=sample)
    if role == "reference" and os.sep not in str(source) and path.suffix == "":
        # a catalog name: pulled once, after the encoder's weights are found
        name = ensure(str(source), ref_dir, quiet=options.quiet, options=options)
        return resolve_reference(name, options, ref_dir, allow_stats=True)
    raise InputError(f"{source}: no such file or directory")


def _explicit_options(opts: ExtractOptions, metrics: tuple[str, ...] | None,
                      nsample: int | None) -> set[str]:
    """For API callers: the options that differ from their defaults count as chosen."""
    base = ExtractOptions()
    chosen = {f for f in ("encoder", "arch", "resize") if getattr(opts, f) != getattr(base, f)}
    return chosen | ({"metrics"} if metrics else set()) | ({"nsample"} if nsample else set())


def _check_default_encoder(ref: Any, opts: ExtractOptions, explicit: Collection[str],
                           ref_dir: str | None) -> None:
    """No encoder chosen, and a registered reference that holds only other encoders' features:
    say which, and how to score against them, before the default encoder's weights (DINOv2,
    1.2 GB) are looked for to extract new ones."""
    if "encoder" in explicit or not isinstance(ref, (str, os.PathLike)) or is_source_arg(ref):
        return
    have = stored_encoders(str(ref), ref_dir)
    if not have or opts.encoder in have:
        return
    which = " or ".join(f"--encoder {n}" for n in have)
    raise InputError(
        f"reference {str(ref)!r} holds {', '.join(have)} features, not {opts.encoder} ones "
        f"({opts.encoder} is the default encoder when no --encoder is given): score against them "
        f"with {which}, or pass --encoder {opts.encoder} to extract {opts.encoder} features from "
        "its source (needs its weights)")


def default_name(source: SourceLike) -> str:
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        return p.stem if p.suffix else p.name
    if isinstance(source, FeatureSet) and source.source:
        return Path(source.source).stem or "samples"
    if isinstance(source, GeneratedSource):
        return source.arg.rpartition(":")[2].rpartition(".")[2] or "samples"
    return "samples"


def score(samples: SourceLike | Sequence[SourceLike] | None = None,
          ref: SourceLike | None = None, *,
          test: SourceLike | None = None, metrics: str | Sequence[str] = "all", seed: int = 0,
          nsample: int | None = None, bootstrap: int = 0, realism_k: int = 5,
          names: Sequence[str] | None = None,
          per_sample: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          ref_dir: str | None = None, options: ExtractOptions | None = None,
          protocol: str | None = None, explicit: Collection[str] | None = None,
          generator: Any = None, num_samples: int | None = None,
          generator_args: dict[str, Any] | None = None, labels: str | None = None,
          num_classes: int | None = None, save_samples: int = 0,
          samples_dir: str | os.PathLike | None = None, step: int | None = None,
          prompts: str | os.PathLike | Sequence[str] | None = None, rke_sigma: float | None = None,
          per_class: str | os.PathLike | None = None,
          **extract: Any) -> Result | list[Result] | None:
    """Score one or several sample sets against one reference (loaded once).

    The one scoring loop: ``evalkit score`` is a thin shell over it.

    Args:
        samples: a source (image folder, zip, npz/npy, feature file), a FeatureSet, an N×D
            feature array, or a list of these.
        ref: the same kinds, a statistics ``.npz`` (mu/sigma), or a registered reference name.
        test: held-out real data for ct / fls / fls_pog.
        metrics: "all" or metric keys ("fd,kd" or a list).
        seed: the run seed: subsampling, bootstrap and every metric's draws derive from it.
        nsample: use at most this many rows of each set (seeded subsample).
        bootstrap: B > 0 adds ``metrics_ci``, 95% intervals from B half-samples of the
            generated set (:mod:`evalkit.scoring.intervals`; the method is recorded in
            ``config.bootstrap_method``).
        realism_k: k of the realism score (5: dgm-eval, the default; 3: the NVlabs code),
            recorded in ``config.realism_k``.
        names: model names, one per sample set (default: the sources' stems).
        per_sample: CSV path of realism, nearest reference and authenticity per generated
            sample (with several sets, one file per set: ``stem.NAME.csv``).
        out: write the records here (JSON, atomically): one object, or a list for several sets.
        options / extract: extraction options (ExtractOptions fields, e.g. encoder="inception";
            ``encoder`` may also be the object :func:`evalkit.custom_encoder` returned).
        protocol: a paper protocol (``adm``, ``edm2``, ``dgm-eval``, ``coco30k``;
            :mod:`evalkit.scoring.protocols`):
            sets encoder, resize, sample count, metrics and the default ``ref``; the records
            get a ``protocol`` field. Options that contradict it raise InputError.
        explicit: which of encoder/arch/resize/metrics/nsample the caller set on purpose
            (the CLI passes what was typed); None: those differing from the defaults.
        generator: instead of ``samples``, a callable ``fn(batch_size, *, seed, labels=None)``
            returning B×3×H×W uint8 or float [0, 1] images (or ``"pkg.module:function"``):
            ``num_samples`` images are sampled and encoded batch by batch, never written
            (:mod:`evalkit.features.generate`; batch size ``batch_size``, per-batch seeds
            from ``seed``, the same on any number of processes).
        num_samples: how many images the generator makes.
        generator_args: keyword arguments passed to every generator call.
        labels: ``random`` or ``balanced`` class labels for a class-conditional generator
            (``num_classes`` classes, else ``generator.num_classes``); in the record.
        save_samples: write a grid PNG and the first K samples as PNG files to
            ``samples_dir`` (default: ``samples`` beside ``out``, else in the working folder).
        step: the training step recorded in the record (``step``), for `evalkit track`.
        prompts: the prompt of each generated image: a prompts file (``.txt`` in sample order,
            ``.csv``/``.jsonl`` file -> prompt, COCO caption ``.json``) or one string per
            sample; with ``--encoder clip`` they are embedded for ``clip_score``
            (:mod:`evalkit.features.conditions`).
        rke_sigma: the Gaussian bandwidth of ``rke`` (None: the reference's median pairwise
            distance); the value used is recorded as ``rke_sigma``.
        per_class: CSV path of the per-class values (one row per class: sample counts, FD,
            precision, recall, density, coverage, why a value is missing; with several sets,
            one file per set as for ``per_sample``); needs labels in both sets and
            ``fd_per_class`` or ``precision_per_class`` among the metrics.

    Returns:
        a Result per sample set (a single Result when ``samples`` is one source). Under
        torchrun, ranks other than 0 only help extract and get ``[]`` / None.

    Raises:
        InputError: bad sources, names or metric inputs (see :mod:`evalkit.errors`).
    """
    if "encoder" in extract:  # a name, or the object evalkit.custom_encoder returned
        extract["encoder"] = encoder_name(extract["encoder"])
    opts = options or ExtractOptions(**extract)
    encoders = encoder_list(opts.encoder)
    gen = None
    if generator is not None or num_samples is not None:
        gen = generated_source(samples, generator, num_samples, seed=seed, options=opts,
                               generator_args=generator_args, labels=labels,
                               num_classes=num_classes, save_samples=save_samples)
        samples = gen
    elif samples is None:
        raise InputError("nothing to score: give SAMPLES, or --generator with --num-samples")
    if len(encoders) > 1:
        results = _score_encoders(encoders, samples, ref, test=test, metrics=metrics,
                                  seed=seed, nsample=nsample, bootstrap=bootstrap,
                                  realism_k=realism_k, names=names, per_sample=per_sample,
                                  out=out, ref_dir=ref_dir, options=opts, protocol=protocol,
                                  step=step, prompts=prompts, rke_sigma=rke_sigma,
                                  per_class=per_class)
        if gen is not None and save_samples and is_main():
            write_samples(gen, save_samples, samples_dir, out)
        return results
    if opts.encoder != encoders[0]:
        opts = replace(opts, encoder=encoders[0])
    many = isinstance(samples, (list, tuple))
    sources = list(samples) if many else [samples]
    names = list(names) if names else [default_name(s) for s in sources]
    if len(names) != len(sources):
        raise InputError(f"--name: {len(names)} names for {len(sources)} sample sets")
    csvs = [per_sample_path(str(per_sample), n, len(sources) > 1) for n in names] if per_sample else []
    class_csvs = ([per_sample_path(str(per_class), n, len(sources) > 1) for n in names]
                  if per_class else [])
    check_outputs({"--out": out, "--per-sample": csvs, "--per-class": class_csvs},  # before any
                  inputs=[s for s in (*sources, ref, test)  # work; never over an input
                          if isinstance(s, (str, os.PathLike))])
    metric_names = metrics if isinstance(metrics, str) else ",".join(metrics)
    metric_list, proto, published = parse_metric_list(metric_names), None, None
    if per_class and metric_list is not None and not set(metric_list) & set(PER_CLASS_METRICS):
        raise InputError(f"--per-class: needs {' or '.join(PER_CLASS_METRICS)} in --metrics "
                         f"(got {','.join(metric_list)})")
    if protocol:
        if explicit is None:
            explicit = _explicit_options(opts, metric_list, nsample)
        proto = resolve_protocol(protocol, opts, explicit=explicit, metrics=metric_list,
                                 nsample=nsample, ref=ref, has_test=test is not None,
                                 has_prompts=prompts is not None)
        opts, ref, nsample, metric_list = proto.options, proto.ref, proto.nsample, proto.metrics
    elif ref is None:
        raise InputError("--ref is required (a source or reference name), or --protocol NAME")
    overrides = dict(proto.overrides) if proto else {}
    if rke_sigma is not None:
        overrides["rke"] = {**overrides.get("rke", {}), "sigma": float(rke_sigma)}
    config = ScoreConfig(metrics=metric_list, seed=seed, nsample=nsample, device=opts.device,
                         bootstrap=bootstrap, realism_k=realism_k, progress=not opts.quiet,
                         overrides=overrides)
    check_rounds(bootstrap)
    run_rng = RunRNG(seed)

    def sample(role: str) -> RowSample | None:  # --nsample, drawn before any image is read
        return row_sample(nsample, run_rng, role) if nsample else None

    if proto is None:
        _check_default_encoder(ref, opts, _explicit_options(opts, metric_list, nsample)
                               if explicit is None else explicit, ref_dir)
    real = load_source(ref, opts, role="reference", ref_dir=ref_dir, sample=sample("reference"))
    if proto:  # the encoder output the protocol scores (coco30k: CLIP's unnormalised projection)
        real = proto.features_of(real)
    if proto and proto.protocol.published_stats and real.has_samples:
        name = real.meta.get("reference_name")  # None: the reference was a path, not a name
        published = published_stats(name, opts, ref_dir) if name else None
        if published is not None:  # fd/sfid against the statistics inside the batch
            real.moments = dict(published.moments)
    test_fs = (load_source(test, opts, role="test", sample=sample("test"))
               if test is not None else None)
    if proto:
        test_fs = proto.features_of(test_fs)
    results = []
    # a generator scored on moments-only metrics keeps no rows: memory flat in num_samples
    streamed = (moment_arrays(metric_list)
                if not (nsample or bootstrap or per_sample or per_class or prompts or proto)
                else None)
    for src, name in zip(sources, names):
        fake = load_source(src, opts, role="samples", sample=sample("samples"),
                           moments=streamed if isinstance(src, GeneratedSource) else None)
        if proto:
            fake = proto.features_of(fake)
        # --prompts, else the prompts the source itself carries (tar .txt, a Parquet column)
        given = prompts if prompts is not None else (
            fake.prompts if fake.prompts is not None and "text" not in fake.arrays else None)
        fake = attach_prompts(fake, given, opts)
        if not is_main():  # torchrun: the other ranks only help extract
            continue
        if per_class and (fake.labels is None or not real.has_samples or real.labels is None):
            raise InputError(f"--per-class: needs class labels in the samples ({fake.source}) and "
                             f"the reference ({real.source}): class subfolders or a 'labels' array")
        scores = score_set(fake, real, test_fs, config, name=name,
                           ref_name=real.meta.get("reference_name"))
        fields, warning = proto.describe(scores.samples.n, published) if proto else (None, None)
        if warning:
            warnings.warn(f"{name}: {warning}", ProtocolWarning, stacklevel=2)
        csv = None
        if per_sample is not None:
            path = per_sample_path(str(per_sample), name, len(sources) > 1)
            write_per_sample(path, scores.samples, real, config)
            base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
            csv = os.path.relpath(os.path.abspath(path), base)
        class_csv = None
        if per_class is not None:
            path = per_sample_path(str(per_class), name, len(sources) > 1)
            k = config.metric_overrides().get("precision_per_class", {}).get(
                "nearest_k", get_metric("precision_per_class").defaults["nearest_k"])
            write_per_class_csv(path, per_class_rows(scores.samples, scores.reference,
                                                     scores.details, nearest_k=k))
            base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
            class_csv = os.path.relpath(os.path.abspath(path), base)
        record = build_record(scores, per_sample=csv, per_class=class_csv, protocol=fields,
                              generator=src.describe() if isinstance(src, GeneratedSource)
                              else fake.meta.get("generator"), step=step)
        results.append(Result(record, scores.samples))
    if out is not None and results:
        write_records([r.record for r in results], out)
    if gen is not None and save_samples and is_main():
        write_samples(gen, save_samples, samples_dir, out)
    return results if many else (results[0] if results else None)


def generated_source(samples: Any, generator: Any, num_samples: int | None, *, seed: int,
                     options: ExtractOptions, generator_args: dict[str, Any] | None = None,
                     labels: str | None = None, num_classes: int | None = None,
                     save_samples: int = 0) -> GeneratedSource:
    """The :class:`~evalkit.features.generate.GeneratedSource` :func:`score` samples from."""
    if samples is not None:
        raise InputError("give either SAMPLES or --generator, not both")
    if generator is None or num_samples is None:
        raise InputError("--generator needs --num-samples N (and --num-samples a --generator)")
    fn = load_generator(generator) if isinstance(generator, str) else generator
    name = generator if isinstance(generator, str) else None
    return GeneratedSource.make(fn, num_samples, seed=seed, batch_size=options.batch_size,
                                labels=labels, num_classes=num_classes, kwargs=generator_args,
                                name=name, keep_first=save_samples)


def write_samples(gen: GeneratedSource, k: int, folder: str | os.PathLike | None,
                  out: str | os.PathLike | None = None) -> Path:
    """``grid.png`` of the first ``k`` samples and each of them as ``NNNNNN.png`` in
    ``folder`` (default: ``samples`` beside ``out``, else in the working folder)."""
    from PIL import Image

    if folder is None:
        folder = Path(out).resolve().parent / "samples" if out else Path("samples")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = gen.first(k)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:06d}.png")
    Image.fromarray(image_grid(images)).save(folder / "grid.png")
    return folder


def encoder_list(encoder: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> the encoder names, in order, without repeats."""
    parts = [encoder] if isinstance(encoder, str) else list(encoder)
    names = [n.strip() for part in parts for n in str(part).split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise InputError("--encoder: no encoder named")
    return names


def _score_encoders(encoders: list[str], samples: SourceLike | Sequence[SourceLike],
                    ref: SourceLike | None, *, test: SourceLike | None,
                    names: Sequence[str] | None, per_sample: Any, out: Any,
                    options: ExtractOptions, protocol: str | None, step: int | None = None,
                    prompts: Any = None, per_class: Any = None,
                    **score_args: Any) -> list[Result]:
    """:func:`score` with several encoders: every image source is decoded once for all of
    them (:func:`evalkit.features.loader.load_features_many`, each encoder's features cached under
    its own identity), then each encoder's features are scored as a one-encoder run would
    score them. One Result per (encoder, sample set), encoder by encoder; each record's
    ``encoder`` names its own, so leaderboards keep them apart as different protocols."""
    if protocol:
        raise InputError(f"--protocol {protocol} sets its own encoder; name one --encoder "
                         f"(not {','.join(encoders)})")
    if options.arch or options.weights:
        raise InputError("--arch/--weights name one encoder's variant; with several encoders "
                         f"(--encoder {','.join(encoders)}) each uses its default: run that "
                         "encoder separately")
    if per_sample is not None or per_class is not None:
        raise InputError("--per-sample / --per-class need one --encoder (run it per encoder)")
    if launch_env().distributed:
        raise InputError(f"--encoder {','.join(encoders)}: several encoders in one run are not "
                         "supported under torchrun; launch once per encoder")
    if ref is None:
        raise InputError("--ref is required (a source or reference name)")
    sources = list(samples) if isinstance(samples, (list, tuple)) else [samples]
    names = list(names) if names else [default_name(s) for s in sources]
    if len(names) != len(sources):
        raise InputError(f"--name: {len(names)} names for {len(sources)} sample sets")
    paths = [s for s in (*sources, ref, test) if isinstance(s, (str, os.PathLike))]
    check_outputs({"--out": out}, inputs=paths)
    per_encoder = [replace(options, encoder=e) for e in encoders]
    nsample, run_rng = score_args.get("nsample"), RunRNG(score_args.get("seed", 0))
    # each path decoded once per role it plays (once in all without --nsample, whose rows
    # differ by role: each role's sample is drawn on its own stream before any image is read)
    loaded: dict[Any, list[Any]] = {}

    def key(p: Any, role: str) -> Any:
        return (os.fspath(p), role if nsample else None)

    for role, items in (("samples", sources), ("reference", [ref]), ("test", [test])):
        for p in items:
            if isinstance(p, (str, os.PathLike)) and key(p, role) not in loaded:
                loaded[key(p, role)] = features_for_each(
                    p, per_encoder, sample=row_sample(nsample, run_rng, role) if nsample else None)
    for s in sources:  # a generator: sampled once, every encoder on each batch
        if isinstance(s, GeneratedSource):
            loaded[id(s)] = load_generated_many(s, per_encoder)
            for fs in loaded[id(s)]:  # what the record's builder names as the generator
                fs.meta["generator"] = s.describe()

    def pick(s: Any, i: int, role: str = "samples") -> Any:
        if isinstance(s, GeneratedSource):
            return loaded[id(s)][i]
        return loaded[key(s, role)][i] if isinstance(s, (str, os.PathLike)) else s

    results: list[Result] = []
    for i, opts in enumerate(per_encoder):
        results += score([pick(s, i) for s in sources], pick(ref, i, "reference"),
                         test=pick(test, i, "test"),
                         names=names, options=opts, step=step, prompts=prompts, **score_args)
    if out is not None and results:
        write_records([r.record for r in results], out)
    return results


def write_per_sample(path: str | os.PathLike, scored: FeatureSet, real: FeatureSet,
                     config: ScoreConfig) -> None:
    """The per-sample CSV of ``scored`` against ``real``, on the realism metric's stream (so
    the CSV's realism values average to the record's ``realism``)."""
    if not real.has_samples:
        raise InputError(f"--per-sample needs reference features; {real.source} holds "
                         "statistics only")
    seed = RunRNG(config.seed).seed_for("metric", stream_name(get_metric("realism")))
    rarity_seed = RunRNG(config.seed).seed_for("metric", stream_name(get_metric("rarity")))
    write_per_sample_csv(path, scored, real, seed=seed, device=config.device,
                         nearest_k=config.realism_k, rarity_seed=rarity_seed)
