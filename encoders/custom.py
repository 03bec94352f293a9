"""Any ``torch.nn.Module`` as an encoder: :func:`custom_encoder`.

A feature space no registry names (a medical backbone, one's own classifier) is wrapped with
its preprocessing declared (input size, mean/std, resize), registered under a name, and then
used like a built-in: ``evalkit.score(..., encoder=enc)`` from Python, or ``--encoder NAME``
from the CLI when a plugin's ``evalkit.encoders`` entry point returns ``enc.spec``.

Identity: the registered weights digest is the sha256 of the module's state dict (every
tensor's name, dtype, shape and bytes, in key order) and of its class and printed structure,
computed each time an identity is asked for, so a model changed in place (one weight, or a
layer) gets a new cache key and is extracted again; identical modules share cached features.
The preprocessing (size, resize, crop, mean/std) is part of the identity as for every encoder.
Like timm's ``PretrainedCfg``, the wrapper declares input size, interpolation and mean/std.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from evalkit.encoders import register_encoder
from evalkit.encoders.base import Encoder, EncoderSpec, Preprocess, WeightsSpec
from evalkit.errors import InputError

ARCH = "custom"
RESIZES = ("clean", "pil")
_CUSTOM: dict[str, CustomEncoder] = {}  # names registered here (replaceable, unlike others)


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of ``module``'s class, printed structure and state dict (names, dtypes, shapes,
    bytes; parameters and persistent buffers, in key order)."""
    h = hashlib.sha256(b"evalkit.custom/1\n")
    cls = type(module)
    h.update(f"{cls.__module__}.{cls.__qualname__}\n{module!r}\n".encode())
    for key, value in sorted(module.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            h.update(f"{key}\t{value!r}\n".encode())
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class CustomEncoder(Encoder):
    """A user module behind the encoder interface: B×3×S×S in [0, 255] -> normalised with
    ``mean``/``std`` (per channel, [0, 1] scale) -> ``module`` -> ``{"features": B×D}``.

    The module may return a tensor (flattened to B×D), a tuple/list (its first element), or a
    dict with ``features`` (other 2-D entries are kept as extra outputs).
    """

    def __init__(self, module: torch.nn.Module, name: str, preprocess: Preprocess):
        super().__init__()
        self.module = module
        self.name, self.arch = name, ARCH
        self.preprocess = preprocess
        self.outputs: dict[str, int] = {}
        self.set_normalisation(preprocess.mean, preprocess.std)
        self.spec = EncoderSpec(name=name, factory=self._factory,
                                description=f"custom module {type(module).__qualname__} "
                                            f"({preprocess.size} px)",
                                archs=(ARCH,), default_arch=ARCH, outputs={ARCH: self.outputs},
                                weights={ARCH: None}, input_size={ARCH: preprocess.size})

    @property
    def weights_sha256(self) -> str:  # the digest of the module as it is now
        return state_sha256(self.module)

    def weights_spec(self, arch: str = ARCH) -> WeightsSpec:
        """The module's state dict as a declared 'weights file' (its digest, never a file)."""
        sha = self.weights_sha256
        return WeightsSpec(filename=f"evalkit-custom-{self.name}-{sha[:16]}.state_dict",
                           sha256=sha)

    def _factory(self, arch: str | None = None, weights=None, resize: str = "clean",
                 random_init: bool = False, **_) -> CustomEncoder:
        if weights is not None:
            raise InputError(f"{self.name}: a custom encoder's weights are its module's; "
                             "drop --weights")
        if resize != "clean":
            raise InputError(f"--resize {resize}: not for the custom encoder {self.name} "
                             "(its resize is declared by custom_encoder(resize=...))")
        if arch not in (None, ARCH):
            raise InputError(f"{self.name}: a custom encoder has one arch ({ARCH!r})")
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = self.preprocess.size
        out = self.module(self.normalise(images, (size, size)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        outs = dict(out) if isinstance(out, dict) else {"features": out}
        if "features" not in outs:
            raise InputError(f"{self.name}: the module returned a dict without 'features'")
        outs = {k: v.flatten(1) if v.ndim > 2 else v for k, v in outs.items()}
        if not self.outputs:
            self.outputs.update({k: int(v.shape[1]) for k, v in outs.items()})
        return outs


def custom_encoder(module: torch.nn.Module, *, name: str, input_size: int,
                   mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                   resize: str = "clean", crop: bool = False,
                   interpolation: str = "bicubic") -> CustomEncoder:
    """Register ``module`` as encoder ``name`` and return it, ready for ``encoder=``.

    Args:
        module: any ``torch.nn.Module`` taking B×3×S×S float images normalised as below and
            returning B×D features (a tensor, a tuple whose first item is that, or a dict with
            ``features``). It is put in eval mode and moved to the extraction device.
        name: the encoder's name in records, caches and ``--encoder`` (lower case, digits,
            ``_``). Registering the same name again replaces an earlier custom encoder; a
            built-in or plugin name is refused.
        input_size: S, the square input side the images are resized to.
        mean, std: per-channel normalisation on the [0, 1] scale (ImageNet:
            ``(0.485, 0.456, 0.406)``, ``(0.229, 0.224, 0.225)``); default none.
        resize: ``"clean"`` (clean-fid's PIL bicubic on float32, antialiased) or ``"pil"``
            (torchvision's ``Resize`` on the 8-bit image, as timm and dgm-eval transforms do).
        crop: resize the shorter side to S, then centre-crop S×S (else squash to S×S).
        interpolation: ``bicubic`` or ``bilinear``.

    Returns:
        the :class:`CustomEncoder`; ``.spec`` is its EncoderSpec (what a plugin entry point
        returns for the CLI).

    Raises:
        InputError: a name taken by a built-in or plugin encoder, or bad preprocessing values.
    """
    from evalkit.encoders import ENCODERS

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"custom_encoder: module must be a torch.nn.Module, not "
                         f"{type(module).__name__}")
    if name in ENCODERS and name not in _CUSTOM:
        raise InputError(f"custom_encoder: {name!r} is already a registered encoder; "
                         "choose another name")
    if resize not in RESIZES or interpolation not in ("bicubic", "bilinear"):
        raise InputError(f"custom_encoder: resize {resize!r} / interpolation {interpolation!r}:"
                         f" use resize in {', '.join(RESIZES)}, interpolation bicubic or bilinear")
    if int(input_size) < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise InputError("custom_encoder: input_size must be positive and mean/std three "
                         "numbers each (std > 0)")
    pre = Preprocess(size=int(input_size), resize=resize, crop=bool(crop),
                     mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                     interpolation=interpolation)
    enc = CustomEncoder(module, name, pre)
    register_encoder(enc.spec, preprocess=lambda arch, resize="clean": pre,
                     weights=enc.weights_spec, replace=name in _CUSTOM)
    _CUSTOM[name] = enc
    return enc


def encoder_name(encoder) -> str:
    """The registered name of an ``encoder=`` argument: a name, or a custom encoder object."""
    if isinstance(encoder, str):
        return encoder
    name = getattr(encoder, "name", None)
    if isinstance(encoder, CustomEncoder) and _CUSTOM.get(name) is encoder:
        return name
    raise InputError("encoder= takes an encoder name or the object evalkit.custom_encoder(...) "
                     f"returned, not {type(encoder).__name__}")
