"""Conditions as data (prompt files, prompts through feature files, records and per-sample CSVs)
and clip_score against torchmetrics' CLIPScore on the same random open_clip weights."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_images

import evalkit
from evalkit.errors import InputError
from evalkit.features.conditions import attach_prompts
from evalkit.features.featureset import FeatureSet, load_feature_file, save_feature_file
from evalkit.images.conditions import read_prompts
from evalkit.metrics import clip_score
from evalkit.metrics.clip_score import clip_scores

FILES = ["imgs/a.png", "imgs/b.png", "x.zip::sub/c.png"]


# ------------------------------------------------------------------------- prompt files


def test_txt_prompts_are_in_sample_order(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("a cat\na dog, running\n\n", encoding="utf-8")
    assert read_prompts(p, None, 3) == ["a cat", "a dog, running", ""]
    with pytest.raises(InputError, match="2 lines for 3 samples"):
        p.write_text("a\nb\n")
        read_prompts(p, None, 3)


def test_mapping_formats_match_locators(tmp_path):
    rows = [("b.png", "bee"), ("a.png", "ant, \"quoted\""), ("c", "cow")]
    with open(tmp_path / "p.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption"])
        w.writerows(rows)
    (tmp_path / "p.jsonl").write_text(
        "\n".join(json.dumps({"file": k, "prompt": v}) for k, v in rows) + "\n")
    coco = {"images": [{"id": 7, "file_name": "a.png"}, {"id": 9, "file_name": "b.png"},
                       {"id": 3, "file_name": "c.png"}],
            "annotations": [{"image_id": 9, "caption": "bee"}, {"image_id": 7, "caption": "ant, \"quoted\""},
                            {"image_id": 7, "caption": "second caption is ignored"},
                            {"image_id": 3, "caption": " cow "}]}
    (tmp_path / "p.json").write_text(json.dumps(coco))
    want = ["ant, \"quoted\"", "bee", "cow"]
    for name in ("p.csv", "p.jsonl", "p.json"):
        assert read_prompts(tmp_path / name, FILES, 3) == want, name
    with pytest.raises(InputError, match="no prompt for 1 of 4"):
        read_prompts(tmp_path / "p.csv", FILES + ["d.png"], 4)
    with pytest.raises(InputError, match="needs image files"):
        read_prompts(tmp_path / "p.csv", None, 3)
    (tmp_path / "bad.csv").write_text("name,label\na.png,x\n")
    with pytest.raises(InputError, match="prompt / caption / text"):
        read_prompts(tmp_path / "bad.csv", FILES, 3)


def test_ambiguous_short_names_are_not_guessed(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"file": "u/a.png", "prompt": "one"}) + "\n"
                                      + json.dumps({"file": "v/a.png", "prompt": "two"}) + "\n")
    assert read_prompts(tmp_path / "p.jsonl", ["v/a.png", "u/a.png"], 2) == ["two", "one"]
    with pytest.raises(InputError, match="no prompt"):
        read_prompts(tmp_path / "p.jsonl", ["w/a.png"], 1)
    # an exact key wins over a short form another entry shares
    (tmp_path / "q.json").write_text(json.dumps({"a.png": "x", "u/a.png": "y"}))
    assert read_prompts(tmp_path / "q.json", ["a.png", "u/a.png"], 2) == ["x", "y"]


def test_prompts_travel_through_subset_and_feature_files(tmp_path):
    fs = FeatureSet({"features": np.arange(12.0).reshape(4, 3)}, source="x")
    fs = attach_prompts(fs, ["zero", "one", "two", "ünï"])
    assert "text" not in fs.arrays  # no CLIP encoder recorded: prompts only
    sub = fs.subset(np.array([3, 1, 1]))
    assert sub.prompts == ["ünï", "one", "one"]
    save_feature_file(sub, tmp_path / "f.npz")
    back = load_feature_file(tmp_path / "f.npz")
    assert back.prompts == sub.prompts
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:  # stored without pickle
        assert z["prompts"].dtype.kind == "U"
    with pytest.raises(InputError, match="3 prompts for 4 samples"):
        attach_prompts(fs, ["a", "b", "c"])


# ------------------------------------------------------------------------- clip_score


def test_clip_score_hand_values():
    img = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    txt = np.array([[1.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    # cos 1, -1 (clamped to 0), 1/sqrt(2)
    assert clip_scores(img, txt) == pytest.approx([100.0, 0.0, 100 / np.sqrt(2)], rel=1e-12)
    assert clip_score(img, txt)["clip_score"] == pytest.approx((100 + 100 / np.sqrt(2)) / 3, rel=1e-12)
    perm = np.array([2, 0, 1])
    assert clip_score(img[perm], txt[perm])["clip_score"] == pytest.approx(
        clip_score(img, txt)["clip_score"], rel=1e-12)


ARCH = "ViT-B-32"


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    """A random open_clip ViT-B-32 saved in open_clip's state-dict format."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = open_clip.create_model(ARCH, pretrained=None).eval()
    path = tmp_path_factory.mktemp("oc") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return model, path


def _torchmetrics_adapter(model):
    """torchmetrics' CLIPScore model/processor interface around an open_clip model: the
    processor normalises 224 x 224 uint8 images with OpenAI's mean/std and tokenizes with
    open_clip's tokenizer."""
    import open_clip

    tok = open_clip.get_tokenizer(ARCH)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)

    class Model(torch.nn.Module):
        config = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=77))

        def get_image_features(self, pixel_values):
            return model.encode_image(pixel_values)

        def get_text_features(self, input_ids, attention_mask=None):
            return model.encode_text(input_ids)

    def processor(text=None, images=None, **_):
        if images is not None:
            return {"pixel_values": torch.stack([(im.float() / 255 - mean) / std for im in images])}
        ids = tok(text)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    return lambda: (Model(), processor)


PROMPTS = ["a photo of a cat", "a red car on a street", "two dogs", "an oil painting of a ship",
           "a bowl of fruit", "the moon over the sea"]


def test_clip_score_equals_torchmetrics_on_the_same_weights(tmp_path, clip_model):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal import CLIPScore

    model, weights = clip_model
    paths = write_images(tmp_path / "gen", len(PROMPTS), size=(224, 224), seed=4)
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    res = evalkit.score(str(tmp_path / "gen"), str(tmp_path / "gen"), metrics="clip_score",
                        prompts=tmp_path / "p.txt", encoder="clip", arch=ARCH, weights=str(weights),
                        device="cpu", workers=0, per_sample=str(tmp_path / "ps.csv"))
    ours = res["clip_score"]

    from PIL import Image

    imgs = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths]
    with torch.no_grad():
        per_pair = []
        for im, prompt in zip(imgs, PROMPTS):  # one pair per update: its own max(., 0)
            m = CLIPScore(model_name_or_path=_torchmetrics_adapter(model))
            m.update(im, prompt)
            per_pair.append(float(m.compute()))
        model_fn = _torchmetrics_adapter(model)
        raw, _ = _clip_score_update(imgs, PROMPTS, *model_fn())  # 100 cos per pair, unclamped
    scored = res.scored
    ours_raw = 100 * np.einsum("ij,ij->i", scored.arrays["embedding"], scored.arrays["text"])
    # float32 embeddings: cosines agree to ~1e-6, scores (0..100) to ~1e-4
    assert ours_raw == pytest.approx(raw.numpy(), abs=2e-4)
    assert np.abs(raw.numpy()).max() > 0.1  # not a trivial comparison
    assert ours == pytest.approx(float(np.mean(per_pair)), abs=2e-4)
    rows = list(csv.DictReader(open(tmp_path / "ps.csv", encoding="utf-8")))
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [float(r["clip_score"]) for r in rows] == pytest.approx(per_pair, abs=2e-4)
    rec = res.record
    assert rec["samples"]["prompts"]["n"] == len(PROMPTS)
    assert rec["samples"]["text"]["truncated"] == 0


def test_long_prompts_truncate_keeping_the_end_token(tmp_path, clip_model):
    import open_clip

    model, weights = clip_model
    long = " ".join(["word"] * 300)  # 300 tokens: far beyond the 77-token context
    prompts = ["a cat", long, "a dog"]
    write_images(tmp_path / "gen", 3, size=(224, 224), seed=5)
    res = evalkit.score(str(tmp_path / "gen"), str(tmp_path / "gen"), metrics="clip_score",
                        prompts=prompts, encoder="clip", arch=ARCH, weights=str(weights),
                        device="cpu", workers=0)
    assert res.record["samples"]["text"]["truncated"] == 1
    scored = res.scored
    tok = open_clip.get_tokenizer(ARCH)
    ids = tok([long])
    assert ids.shape[1] == 77 and int(ids[0, -1]) == tok.eot_token_id
    with torch.no_grad():
        keep_end = model.encode_text(ids, normalize=True)[0].numpy()
        raw = torch.tensor([[tok.sot_token_id] + tok.encode(long) + [tok.eot_token_id]])
        sliced = model.encode_text(raw[:, :77], normalize=True)[0].numpy()  # end token cut off
    assert np.abs(scored.arrays["text"][1] - keep_end).max() < 1e-5
    assert np.abs(sliced - keep_end).max() > 1e-3  # the slice pools a word instead: differs


# ------------------------------------------------------------------------- per-condition metrics


def test_fd_per_class_equals_pytorch_fid_per_class():
    from anchors import pytorch_fid

    from evalkit.metrics import fd_per_class

    g = np.random.default_rng(0)
    d = 6
    # classes 0..2 full rank in both sets; class 3 rank-deficient (4 samples <= 6 dims);
    # class 4 has one generated sample (skipped), class 5 is in the reference only (skipped)
    lab_f = np.repeat([0, 1, 2, 3, 4], [40, 30, 25, 4, 1])
    lab_r = np.repeat([0, 1, 2, 3, 5], [50, 20, 35, 5, 9])
    fake = g.standard_normal((len(lab_f), d)) + lab_f[:, None] * 0.3
    real = g.standard_normal((len(lab_r), d)) * 1.2 + lab_r[:, None] * 0.25
    out = fd_per_class(real, fake, lab_f, lab_r, device="cpu")
    assert out["_skipped"] == ["4", "5"] and out["_rank_deficient"] == ["3"]
    for c in (0, 1, 2):  # full rank: pytorch-fid (scipy sqrtm) to float64 round-off
        want = pytorch_fid(real[lab_r == c], fake[lab_f == c])
        assert out["_per_class"][str(c)] == pytest.approx(want, rel=1e-9), c
    # rank-deficient: the definition via the eigenvalues of S_g S_r (real and >= 0)
    a, b = np.cov(fake[lab_f == 3], rowvar=False), np.cov(real[lab_r == 3], rowvar=False)
    ev = np.clip(np.linalg.eigvals(a @ b).real, 0, None)
    mu = fake[lab_f == 3].mean(0) - real[lab_r == 3].mean(0)
    want3 = mu @ mu + np.trace(a) + np.trace(b) - 2 * np.sqrt(ev).sum()
    assert out["_per_class"]["3"] == pytest.approx(want3, rel=1e-8)
    assert out["fd_per_class"] == pytest.approx(np.mean([out["_per_class"][k] for k in "0123"]), rel=1e-12)
    # the GPU's zero-padded batched SVDs equal the per-class SVDs (run here on the CPU)
    from evalkit.metrics.conditional import trace_sqrt_products

    fa = [np.cov(fake[lab_f == c], rowvar=False) for c in range(3)]  # any factors will do
    ra = [real[lab_r == c] / 7 for c in range(4)][:3]
    assert trace_sqrt_products(fa, ra, "cpu", batched=True) == pytest.approx(
        trace_sqrt_products(fa, ra, "cpu", batched=False), rel=1e-12)
    # analytic: identical sets per class -> 0 for every class
    same = fd_per_class(fake, fake, lab_f, lab_f, device="cpu")
    assert abs(same["fd_per_class"]) < 1e-9


def test_prompt_diversity_equals_vendi_package_per_prompt():
    from anchors import vendi_package

    from evalkit.metrics import prompt_diversity

    g = np.random.default_rng(1)
    ids = np.repeat([0, 1, 2, 3], [5, 8, 6, 1])  # prompt 3 has one image: left out
    x = g.standard_normal((len(ids), 7)) + 0.5
    out = prompt_diversity(x, ids, device="cpu")
    assert out["_prompts"] == 3 and out["_single"] == 1
    want = np.mean([vendi_package(x[ids == p])["vendi"] for p in (0, 1, 2)])
    assert out["prompt_vendi"] == pytest.approx(want, rel=1e-6)
    assert out["prompt_vendi_all"] == pytest.approx(vendi_package(x)["vendi"], rel=1e-6)

    def mean_sim(rows):
        u = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return np.mean([u[i] @ u[j] for i in range(len(u)) for j in range(len(u)) if i != j])

    assert out["prompt_similarity"] == pytest.approx(np.mean([mean_sim(x[ids == p]) for p in (0, 1, 2)]),
                                                     rel=1e-12)
    # one image per prompt: nothing in-prompt to report, not an error
    one = prompt_diversity(x, np.arange(len(x)), device="cpu")
    assert one["prompt_vendi"] is None and one["prompt_similarity"] is None and one["_single"] == len(x)
    # analytic: every prompt's images identical -> Vendi 1, similarity 1
    copies = prompt_diversity(np.repeat(x[:4], 3, axis=0), np.repeat(np.arange(4), 3), device="cpu")
    assert copies["prompt_vendi"] == pytest.approx(1.0, abs=1e-9)
    assert copies["prompt_similarity"] == pytest.approx(1.0, abs=1e-12)


def test_prompt_metrics_run_from_the_pipeline():
    """prompts -> ids in scoring; prompt metrics are skipped without prompts."""
    g = np.random.default_rng(2)
    fake = attach_prompts(FeatureSet({"features": g.standard_normal((12, 5))}, source="f"),
                          ["a", "b", "c"] * 4)
    real = FeatureSet({"features": g.standard_normal((12, 5))}, source="r")
    res = evalkit.score(fake, real, metrics="all", device="cpu")
    assert res["prompt_vendi"] > 1 and "prompt_vendi_all" in res.metrics
    assert "clip_score" in res.record["skipped"] and "fd_per_class" in res.record["skipped"]
    bare = evalkit.score(FeatureSet({"features": fake.arrays["features"]}, source="f"), real,
                         metrics="all", device="cpu")
    assert "prompts" in bare.record["skipped"]["prompt_vendi"]


def test_class_coverage_hand_checked():
    from evalkit.metrics import class_coverage

    eye = np.eye(4)
    logits = eye[[0, 0, 1, 2, 0, 1]] * 3  # predictions 0,0,1,2,0,1: 3 of 4 classes covered
    out = class_coverage(logits, labels=np.array([0, 1, 1, 2, 0, 3]))
    h = np.array([3, 2, 1, 0]) / 6
    kl = sum(p * np.log(p / 0.25) for p in h if p > 0)
    assert out == pytest.approx({"class_coverage": 3.0, "class_kl": kl, "class_accuracy": 4 / 6}, rel=1e-12)
    assert class_coverage(eye * 5)["class_kl"] == pytest.approx(0.0, abs=1e-15)
    # TF Inception's 1008 outputs: ImageNet class k is output k + 1, outputs 1001.. unused
    tf = np.zeros((3, 1008))
    tf[0, 1] = tf[1, 1000] = 9.0
    tf[2, 1005] = 99.0  # an unused output never counts as a prediction
    tf[2, 6] = 1.0
    out = class_coverage(tf, labels=np.array([0, 999, 5]))
    assert out["class_accuracy"] == 1.0 and out["class_coverage"] == 3.0
    assert out["class_kl"] == pytest.approx(np.log(1000) + np.log(1 / 3), rel=1e-12)


def test_rke_equals_eigenvalue_definition():
    from evalkit.metrics import rke

    g = np.random.default_rng(3)
    real = g.standard_normal((50, 4))
    fake = np.concatenate([g.standard_normal((20, 4)) * 0.1 + c for c in (0.0, 5.0, 10.0)])
    sigma = 1.3
    sq = ((fake[:, None] - fake[None]) ** 2).sum(-1)
    lam = np.linalg.eigvalsh(np.exp(-sq / (2 * sigma**2)) / len(fake))
    want = 1 / (lam**2).sum()  # order-2 Rényi: exp(H_2) = 1 / sum lambda^2
    out = rke(real, fake, sigma=sigma, device="cpu")
    assert out["rke"] == pytest.approx(want, rel=1e-10) and out["rke_sigma"] == sigma
    assert 3.0 < out["rke"] < 3.2  # three well-separated, slightly spread modes
    # default bandwidth: the median pairwise distance of the reference
    d = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))[np.triu_indices(50, 1)]
    assert rke(real, fake, device="cpu")["rke_sigma"] == pytest.approx(np.median(d), rel=1e-12)
    # analytic: N identical samples are one mode
    assert rke(real, np.zeros((7, 4)), sigma=1.0, device="cpu")["rke"] == pytest.approx(1.0, rel=1e-12)


def _rarity_reference(real, fake, k=3):
    """The authors' convention written out: loops, float64."""
    dist_rr = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
    radii = np.sort(dist_rr, axis=1)[:, k]
    scores = []
    for f in fake:
        d = np.sqrt(((real - f) ** 2).sum(-1))
        inside = [radii[i] for i in range(len(real)) if d[i] < radii[i]]
        scores.append(min(inside) if inside else np.nan)
    return np.array(scores)


def test_rarity_equals_authors_convention():
    from evalkit.metrics import rarity
    from evalkit.metrics.rarity import rarity_scores

    g = np.random.default_rng(4)
    real = g.standard_normal((60, 5))
    fake = np.concatenate([g.standard_normal((30, 5)), g.standard_normal((5, 5)) + 8])  # 5 far out
    want = _rarity_reference(real, fake)
    got = rarity_scores(real, fake, device="cpu")
    assert np.isnan(got).tolist() == np.isnan(want).tolist() and np.isnan(want).sum() >= 5
    assert got[~np.isnan(got)] == pytest.approx(want[~np.isnan(want)], rel=1e-12)
    out = rarity(real, fake, device="cpu")
    assert out["rarity"] == pytest.approx(np.nanmean(want), rel=1e-12)
    assert out["rarity_outside"] == np.isnan(want).sum()
    # strict <: a generated sample exactly on a ball's boundary is outside that ball
    real2 = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # the ball of 10 has radius 9 (its 3rd nearest other sample is 1); the others radius 2 or 3
    edge = rarity_scores(real2, np.array([[19.0], [18.5], [1.5]]), device="cpu")
    assert np.isnan(edge[0]) and edge[1] == 9.0 and edge[2] == 2.0
    perm = g.permutation(len(fake))
    assert rarity(real, fake[perm], device="cpu") == pytest.approx(out, rel=1e-12)


@pytest.mark.parametrize("n,d,shift", [(240, 8, 0.0), (240, 8, 0.7), (300, 40, 0.3)])
def test_top_pr_equals_package(n, d, shift):
    """Same inputs, same numbers as top-pr's compute_top_pr (d = 40: its random projection)."""
    import contextlib
    import io

    top_pr_pkg = pytest.importorskip("top_pr")
    from evalkit.metrics import top_pr

    g = np.random.default_rng(n + d)
    real = g.standard_normal((n, d)).astype(np.float32)
    fake = (g.standard_normal((n, d)) + shift).astype(np.float32)
    np.random.seed(42)  # the package seeds numpy itself only when it projects (d > 32)
    with contextlib.redirect_stdout(io.StringIO()):
        want = top_pr_pkg.compute_top_pr(real_features=real, fake_features=fake)
    got = top_pr(real, fake)
    # counts of significant samples: the ratios are equal exactly
    assert got == {"top_precision": want["fidelity"], "top_recall": want["diversity"],
                   "top_f1": pytest.approx(want["Top_F1"], rel=1e-12)}
    assert 0 < got["top_precision"] <= 1 and 0 < got["top_recall"] <= 1


def test_top_pr_building_blocks_equal_package():
    """The KDE, the confidence band and the bandwidth, each against the package (or, for the
    bandwidth, which the package computes inline, its definition written out)."""
    top_pr_pkg = pytest.importorskip("top_pr.top_pr")
    from scipy.spatial.distance import cdist

    from evalkit.metrics.top_pr import balloon_bandwidth, confidence_band, kde

    g = np.random.default_rng(9)
    x = g.standard_normal((150, 6)).astype(np.float32)
    y = g.standard_normal((90, 6)).astype(np.float32) + 0.3
    h = np.float64(2.1)  # bandwidths are float64 (as the package's estimates are)
    assert kde(x, y, h) == pytest.approx(top_pr_pkg.compact_KDE(x, y, h, kernel="cosine"), rel=1e-12)
    np.random.seed(42)
    c_want, p_want = top_pr_pkg.confband_est(x, h, alpha=0.1, kernel="cosine", p_val=True)
    c_got, p_got = confidence_band(x, h, np.random.RandomState(42), 0.1)
    assert c_got == pytest.approx(c_want, rel=1e-12) and p_got == pytest.approx(p_want, rel=1e-12)
    k = 30
    dist = cdist(x, x)
    later_kth = sorted(sorted(dist[i, i + 1:])[k - 1] for i in range(len(x) - k))
    assert balloon_bandwidth(x, k) == later_kth[int(len(later_kth) * 0.5) - 1]


def test_prdc_per_class_equals_package_per_class():
    from anchors import prdc_package

    from evalkit.metrics import prdc_per_class

    g = np.random.default_rng(11)
    lab_f = np.repeat([0, 1, 2, 3], [40, 30, 25, 3])  # class 3: too few for k = 5
    lab_r = np.repeat([0, 1, 2, 3], [35, 45, 30, 9])
    fake = (g.standard_normal((len(lab_f), 6)) + lab_f[:, None]).astype(np.float32)
    real = (g.standard_normal((len(lab_r), 6)) * 1.1 + lab_r[:, None]).astype(np.float32)
    out = prdc_per_class(real, fake, lab_f, lab_r, device="cpu")
    assert out["_skipped"] == ["3"]
    want = [prdc_package(real[lab_r == c], fake[lab_f == c]) for c in range(3)]
    for key in ("precision", "recall", "density", "coverage"):
        assert out[f"{key}_per_class"] == pytest.approx(np.mean([w[key] for w in want]), rel=1e-12)


def test_top_pr_refuses_three_or_fewer_dimensions_where_the_package_fails(monkeypatch):
    """top-pr's d <= 3 branch never computes the KDE values it compares: the package raises
    (its grid bandwidth search is stubbed out here: it takes minutes and does not matter to
    the failure). evalkit refuses with a typed error, and `--metrics all` skips it."""
    top_pr_mod = pytest.importorskip("top_pr.top_pr")
    from evalkit.errors import MetricInputError
    from evalkit.metrics import top_pr

    g = np.random.default_rng(3)
    real, fake = g.standard_normal((200, 2)), g.standard_normal((200, 2))
    monkeypatch.setattr(top_pr_mod, "bandwidth_est", lambda data, **_: (1.0, 0.1))
    with pytest.raises(UnboundLocalError):
        top_pr_mod.compute_top_pr(real_features=real, fake_features=fake)
    with pytest.raises(MetricInputError, match="more than 3"):
        top_pr(real, fake)
    res = evalkit.score(FeatureSet({"features": fake}, source="f"),
                        FeatureSet({"features": real}, source="r"), metrics="all", device="cpu")
    assert "at least 4 dimensions" in res.record["skipped"]["top_precision"]
    assert "fd" in res.metrics  # the rest of `all` ran
    with pytest.raises(InputError, match="dimensions"):
        evalkit.score(FeatureSet({"features": fake}, source="f"),
                      FeatureSet({"features": real}, source="r"), metrics="top_precision",
                      device="cpu")


def test_top_pr_caps_each_set_at_a_seeded_subsample():
    """Above max_samples each set is a seeded subsample in source order, and the value is the
    package's on those rows; the default cap is 10,000 rows."""
    import contextlib
    import io

    top_pr_pkg = pytest.importorskip("top_pr")
    from evalkit.metrics import get_metric, top_pr

    assert get_metric("top_precision").defaults["max_samples"] == 10000
    g = np.random.default_rng(21)
    real = g.standard_normal((260, 6)).astype(np.float32)
    fake = (g.standard_normal((300, 6)) + 0.4).astype(np.float32)
    got = top_pr(real, fake, max_samples=200, seed=7)
    assert got["_subsampled"] == {"sets": ["reference", "generated"], "max_samples": 200}
    draw = np.random.default_rng(7)  # reference rows first, then generated, each kept in order
    r_idx = np.sort(draw.choice(260, 200, replace=False))
    f_idx = np.sort(draw.choice(300, 200, replace=False))
    np.random.seed(42)  # the package seeds numpy itself only when it projects (d > 32)
    with contextlib.redirect_stdout(io.StringIO()):
        want = top_pr_pkg.compute_top_pr(real_features=real[r_idx], fake_features=fake[f_idx])
    assert (got["top_precision"], got["top_recall"]) == (want["fidelity"], want["diversity"])
    assert top_pr(real, fake, max_samples=200, seed=7) == got  # same seed, same numbers
    full = top_pr(real, fake)  # under the default cap: the full sets, no seed involved
    assert "_subsampled" not in full and top_pr(real, fake, seed=99) == full


# ------------------------------------------------------------------------- streaming evaluator


def _read_uint8(paths):
    from PIL import Image

    return torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                        for p in paths])


def test_evaluator_prompts_equal_score(tmp_path, clip_model):
    """ev.update(images, prompts=...) gives the numbers `score --prompts` gives on the same
    images (clip_score through the same random open_clip model's text tower)."""
    _, weights = clip_model
    prompts = PROMPTS[:3] * 2  # two images per prompt: prompt_vendi too
    write_images(tmp_path / "gen", len(prompts), size=(224, 224), seed=14)
    write_images(tmp_path / "ref", 8, size=(224, 224), seed=15)
    keys = "clip_score,prompt_vendi,prompt_similarity,fd"
    res = evalkit.score(str(tmp_path / "gen"), str(tmp_path / "ref"), metrics=keys,
                        prompts=prompts, encoder="clip", arch=ARCH, weights=str(weights),
                        device="cpu", workers=0)
    ev = evalkit.Evaluator("clip", str(tmp_path / "ref"), arch=ARCH, weights=str(weights),
                           metrics=keys, device="cpu")
    images = _read_uint8(tmp_path / "gen" / f for f in res.scored.files)
    ev.update(images[:4], prompts=prompts[:4])
    ev.update(images[4:], prompts=prompts[4:])
    rec = ev.compute()
    assert set(rec["metrics"]) == set(res.metrics)
    for k, v in res.metrics.items():  # same pixels, same float32 model: round-off only
        assert rec["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-4), k
    assert rec["samples"]["text"]["truncated"] == 0
    # per image, not only the clamped mean (random weights: most cosines are negative)
    fs = ev.features()
    assert fs.prompts == res.scored.prompts
    assert np.abs(fs.arrays["text"] - res.scored.arrays["text"]).max() < 1e-5
    with pytest.raises(InputError, match="every batch"):
        ev.update(images[:2])  # prompts given before, none now
    with pytest.raises(InputError, match="one per image"):
        ev.update(images[:2], prompts=["only one"])


def test_evaluator_labels_equal_score(tmp_path):
    """ev.update(images, labels=...) gives score's per-class numbers on the same class folders."""
    write_images(tmp_path / "gen", 12, classes=["a", "b", "c"], seed=16)
    write_images(tmp_path / "ref", 15, classes=["a", "b", "c"], seed=17)
    keys = "fd_per_class,fd"
    res = evalkit.score(str(tmp_path / "gen"), str(tmp_path / "ref"), metrics=keys,
                        encoder="pixel", device="cpu", workers=0)
    ev = evalkit.Evaluator("pixel", str(tmp_path / "ref"), metrics=keys, device="cpu")
    images = _read_uint8(tmp_path / "gen" / f for f in res.scored.files)
    labels = res.scored.labels
    assert len(set(labels.tolist())) == 3
    ev.update(images[:5], labels=torch.as_tensor(labels[:5]))
    ev.update(images[5:], labels=labels[5:])
    rec = ev.compute()
    assert rec["metrics"]["fd_per_class"] == pytest.approx(res["fd_per_class"], rel=1e-9)
    assert rec["metrics"]["fd"] == pytest.approx(res["fd"], rel=1e-9)
    ev.reset()
    ev.update(images)  # no labels: the per-class metric cannot run
    with pytest.raises(InputError, match="labels"):
        ev.compute()


# ------------------------------------------------------------------------- per-class CSV


def test_per_class_csv_reads_back_with_pandas(tmp_path):
    """`score --per-class FILE`: one row per class of either set, each value against
    pytorch-fid / the prdc package on that class's rows; skipped classes say why."""
    import pandas as pd
    from anchors import prdc_package, pytorch_fid
    from click.testing import CliRunner

    from evalkit.cli import main

    g = np.random.default_rng(12)
    lab_f = np.repeat([0, 1, 2, 3], [40, 30, 7, 1])  # 2: rank-deficient (7 <= D); 3: too few
    lab_r = np.repeat([0, 1, 2, 3, 4], [35, 45, 30, 9, 8])  # 4: no generated sample
    d = 8
    fake = (g.standard_normal((len(lab_f), d)) + lab_f[:, None]).astype(np.float32)
    real = (g.standard_normal((len(lab_r), d)) * 1.1 + lab_r[:, None]).astype(np.float32)
    save_feature_file(FeatureSet({"features": fake}, lab_f, source="f"), tmp_path / "gen.npz")
    save_feature_file(FeatureSet({"features": real}, lab_r, source="r"), tmp_path / "ref.npz")
    out_dir = tmp_path / "out"
    res = CliRunner().invoke(main, ["score", str(tmp_path / "gen.npz"), "--ref",
                                    str(tmp_path / "ref.npz"), "--metrics",
                                    "fd_per_class,precision_per_class", "--per-class",
                                    str(out_dir / "classes.csv"), "--out",
                                    str(out_dir / "rec.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out_dir / "classes.csv")
    assert list(table.columns) == ["class", "n_samples", "n_reference", "fd", "precision",
                                   "recall", "density", "coverage", "rank_deficient", "skipped"]
    assert table["class"].tolist() == [0, 1, 2, 3, 4]
    assert table["n_samples"].tolist() == [40, 30, 7, 1, 0]
    assert table["n_reference"].tolist() == [35, 45, 30, 9, 8]
    for c in (0, 1, 2):
        row = table.iloc[c]
        xf, xr = fake[lab_f == c], real[lab_r == c]
        assert row["fd"] == pytest.approx(pytorch_fid(xf, xr), rel=1e-8)
        want = prdc_package(xr, xf)
        for k in ("precision", "recall", "density", "coverage"):
            assert row[k] == pytest.approx(want[k], rel=1e-12), (c, k)
    assert table["rank_deficient"].tolist()[:3] == [0, 0, 1]
    for c in (3, 4):
        row = table.iloc[c]
        assert np.isnan(row["fd"]) and np.isnan(row["precision"])
        assert "fd: fewer than 2" in row["skipped"] and "prdc: at most k = 5" in row["skipped"]
    rec = json.loads((out_dir / "rec.json").read_text())
    assert rec["per_class"] == "classes.csv"
    assert rec["metrics"]["fd_per_class"] == pytest.approx(table["fd"].mean(), rel=1e-12)


def test_per_class_csv_refusals_come_before_the_work(tmp_path):
    from click.testing import CliRunner

    from evalkit.cli import main

    g = np.random.default_rng(1)
    save_feature_file(FeatureSet({"features": g.standard_normal((20, 4))}, np.arange(20) % 2,
                                 source="f"), tmp_path / "gen.npz")
    save_feature_file(FeatureSet({"features": g.standard_normal((20, 4))}, source="r"),
                      tmp_path / "nolabels.npz")
    (tmp_path / "blocker").write_text("a file, not a folder")
    base = ["score", str(tmp_path / "gen.npz"), "--ref", str(tmp_path / "gen.npz"),
            "--device", "cpu"]
    res = CliRunner().invoke(main, base + ["--per-class", str(tmp_path / "blocker" / "x.csv")])
    assert res.exit_code == 2 and "--per-class" in res.output
    res = CliRunner().invoke(main, base + ["--metrics", "fd", "--per-class",
                                           str(tmp_path / "c.csv")])
    assert res.exit_code == 2 and "fd_per_class" in res.output
    res = CliRunner().invoke(main, ["score", str(tmp_path / "gen.npz"), "--ref",
                                    str(tmp_path / "nolabels.npz"), "--device", "cpu",
                                    "--per-class", str(tmp_path / "c.csv")])
    assert res.exit_code == 2 and "labels" in res.output
    assert not (tmp_path / "c.csv").exists()


# ------------------------------------------------------------------------- --protocol coco30k


def test_coco30k_protocol_resolution():
    from evalkit.features.options import ExtractOptions
    from evalkit.scoring import protocols

    r = protocols.resolve_protocol("coco30k", ExtractOptions(), ref="coco_val/")
    assert (r.options.encoder, r.options.arch, r.options.resize, r.nsample) == (
        "clip", "ViT-B-32:openai", "clean", 30000)
    assert r.metrics == ("fd",) and "--prompts" in r.not_run["clip_score"]
    with_prompts = protocols.resolve_protocol("coco30k", ExtractOptions(), ref="coco_val/",
                                              has_prompts=True)
    assert with_prompts.metrics == ("fd", "clip_score") and not with_prompts.not_run
    assert r.protocol.features == "projected"
    with pytest.raises(InputError, match="clip_vit_b_32"):  # no published COCO statistics
        protocols.resolve_protocol("coco30k", ExtractOptions())
    with pytest.raises(InputError, match="--arch ViT-B-32:openai"):
        protocols.resolve_protocol("coco30k", ExtractOptions(encoder="clip", arch="ViT-L-14"),
                                   explicit={"encoder", "arch"}, ref="coco_val/")
    with pytest.raises(InputError, match="--encoder clip"):
        protocols.resolve_protocol("coco30k", ExtractOptions(encoder="inception"),
                                   explicit={"encoder"}, ref="coco_val/")


def test_coco30k_scores_fd_on_the_unnormalised_clip_projection(tmp_path, clip_model):
    """A small coco30k run on random ViT-B/32 weights: FD on open_clip's encode_image output
    (clean-fid's clip_vit_b_32 features), clip_score from the captions, and the record marked
    incomplete (6 samples, not 30,000) with a warning."""
    import open_clip

    from evalkit.errors import ProtocolWarning
    from evalkit.metrics import fd

    base, weights = clip_model
    # OpenAI's ViT-B/32 (the :openai tag) uses QuickGELU: the same weights in that model
    model = open_clip.create_model(ARCH, pretrained=None, force_quick_gelu=True).eval()
    model.load_state_dict(base.state_dict())
    gen = write_images(tmp_path / "gen", 6, size=(224, 224), seed=31)
    ref = write_images(tmp_path / "ref", 8, size=(224, 224), seed=32)
    with pytest.warns(ProtocolWarning, match="EXPECTS 30000 SAMPLES, GOT 6"):
        res = evalkit.score(str(tmp_path / "gen"), str(tmp_path / "ref"), protocol="coco30k",
                            prompts=PROMPTS, weights=str(weights), device="cpu", workers=0,
                            quiet=True)
    proto = res.record["protocol"]
    assert (proto["name"], proto["n_expected"], proto["complete"]) == ("coco30k", 30000, False)
    assert proto["features"] == "projected" and proto["metrics"] == ["fd", "clip_score"]
    assert "clip_vit_b_32" in proto["conventions"]["fd"]
    assert res.record["encoder"]["arch"] == "ViT-B-32:openai"
    assert set(res.metrics) == {"fd", "clip_score"}
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():  # 224 px images: the resize is the identity, only the normalisation
        raw = [model.encode_image((_read_uint8(p).float() / 255 - mean) / std).numpy()
               for p in (gen, ref)]
    assert np.abs(res.scored.arrays["features"] - raw[0]).max() < 1e-4 * np.abs(raw[0]).max()
    assert res["fd"] == pytest.approx(fd(raw[1], raw[0])["fd"], rel=1e-4)
    unit = [r / np.linalg.norm(r, axis=1, keepdims=True) for r in raw]
    assert abs(fd(unit[1], unit[0])["fd"] - res["fd"]) > 0.1 * res["fd"]  # not the embedding
    assert res["clip_score"] >= 0


def test_coco30k_checks_the_sample_count(tmp_path):
    """Fewer samples than 30,000: warned and marked incomplete; more: a seeded subset of
    30,000; sets without the projection are refused."""
    from evalkit.errors import ProtocolWarning

    g = np.random.default_rng(4)

    def feats(n, name, projected=True):
        arrays = {"features": g.standard_normal((n, 6)).astype(np.float32)}
        if projected:
            arrays["projected"] = g.standard_normal((n, 4)).astype(np.float32)
        save_feature_file(FeatureSet(arrays, source=name), tmp_path / f"{name}.npz")
        return str(tmp_path / f"{name}.npz")

    ref = feats(500, "ref")
    with pytest.warns(ProtocolWarning, match="GOT 29999"):
        short = evalkit.score(feats(29999, "short"), ref, protocol="coco30k", device="cpu")
    assert short.record["protocol"]["complete"] is False
    assert short.scored.arrays["features"].shape == (29999, 4)  # the projection, not features
    full = evalkit.score(feats(30005, "long"), ref, protocol="coco30k", device="cpu")
    assert full.record["protocol"]["complete"] is True and full.record["samples"]["n"] == 30000
    with pytest.raises(InputError, match="no 'projected' array"):
        evalkit.score(feats(50, "old", projected=False), ref, protocol="coco30k", device="cpu")


def test_clip_cache_entries_without_projected_are_not_served(tmp_path, clip_model):
    """A clip entry cached before ``projected`` existed (the same source and identity, the
    key of output set 1, arrays features + embedding) is not a hit: the run extracts again
    and gets ``projected`` (the cache key hashes clip's outputs_version 2)."""
    import hashlib

    from evalkit.features.cache import CACHE_SCHEMA, FeatureCache
    from evalkit.features.loader import _prepare, load_features
    from evalkit.features.options import ExtractOptions

    _, weights = clip_model
    write_images(tmp_path / "gen", 3, size=(224, 224), seed=41)
    gen = tmp_path / "gen"
    opts = ExtractOptions(encoder="clip", arch="ViT-B-32:openai", weights=str(weights),
                          device="cpu", workers=0, cache_dir=str(tmp_path / "cache"))
    src, key, identity = _prepare(str(gen), opts)
    payload = {"schema": CACHE_SCHEMA, "source": src.fingerprint, "encoder": identity.key()}
    old_key = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"))
                             .encode("utf-8")).hexdigest()  # the key before output versions
    first = load_features(str(gen), opts)
    assert "projected" in first.arrays
    cache = FeatureCache(opts.cache_dir)
    cache.path(key).unlink()  # only the old-output-set entry is left
    old = {k: v for k, v in first.arrays.items() if k != "projected"}
    cache.store(old_key, FeatureSet(old, first.labels, meta=dict(first.meta), source=first.source))
    assert cache.load(old_key) is not None and "projected" not in cache.load(old_key).arrays
    again = load_features(str(gen), opts)
    assert "projected" in again.arrays
    np.testing.assert_allclose(again.arrays["projected"], first.arrays["projected"],
                               atol=1e-5 * np.abs(first.arrays["projected"]).max())
    assert cache.path(key).is_file()  # stored under the new key


def test_prdc_per_class_at_k_plus_one_samples_by_hand(monkeypatch):
    """A class with exactly k + 1 samples: each radius is the k-th neighbour excluding the
    sample itself, i.e. its largest distance to the other k. The prdc package raises there
    (np.argpartition with kth = k + 1 on k + 1 columns); its definition continued (k+1-th
    smallest of each distance row by a full sort) equals evalkit and the hand values. A class
    with k samples is skipped, and the per-class CSV says why."""
    from anchors import prdc_package

    from evalkit.metrics import prdc_per_class
    from evalkit.results.outputs import per_class_rows

    prdc_pkg = pytest.importorskip("prdc")
    k = 2
    # class 0: real radii [3, 2, 3], fake radii [1.5, 1, 1.5]; ties at the radius (3 < 3,
    # 1.5 < 1.5) are outside (strict <): precision 1, recall 2/3, density (2+3+3)/3/2 = 4/3,
    # coverage 1. class 1: fake radii [7, 6.5, 7]; 7 lies in no real sphere: precision 2/3,
    # recall 1, density (2+3+0)/3/2 = 5/6, coverage 1. class 2: k fake samples -> skipped.
    real = np.array([0, 1, 3, 0, 1, 3, 0, 1, 3], dtype=np.float64)[:, None]
    lab_r = np.repeat([0, 1, 2], 3)
    fake = np.array([0, 0.5, 1.5, 0, 0.5, 7, 0, 1], dtype=np.float64)[:, None]
    lab_f = np.repeat([0, 1, 2], [3, 3, 2])
    hand = {"0": {"precision": 1, "recall": 2 / 3, "density": 4 / 3, "coverage": 1},
            "1": {"precision": 2 / 3, "recall": 1, "density": 5 / 6, "coverage": 1}}
    out = prdc_per_class(real, fake, lab_f, lab_r, nearest_k=k, device="cpu")
    assert out["_skipped"] == ["2"]
    for c, want in hand.items():
        assert out["_per_class"][c] == pytest.approx(want, abs=1e-12)
    for key in ("precision", "recall", "density", "coverage"):
        assert out[f"{key}_per_class"] == pytest.approx(
            np.mean([hand[c][key] for c in hand]), abs=1e-12)

    with pytest.raises(ValueError, match="kth"):  # the package at n = k + 1
        prdc_package(real[lab_r == 0], fake[lab_f == 0], k)
    monkeypatch.setattr(prdc_pkg.prdc, "get_kth_value",
                        lambda d, k, axis=-1: np.sort(d, axis=axis)[..., k - 1])
    for c in hand:
        got = prdc_package(real[lab_r == int(c)], fake[lab_f == int(c)], k)
        assert got == pytest.approx(hand[c], abs=1e-12)

    fs_f = FeatureSet({"features": fake}, lab_f, source="f")
    fs_r = FeatureSet({"features": real}, lab_r, source="r")
    rows = {r["class"]: r for r in per_class_rows(fs_f, fs_r, {"precision_per_class": out},
                                                  nearest_k=k)}
    assert rows["2"]["precision"] is None and rows["2"]["n_samples"] == 2
    assert "prdc: at most k = 2 samples in a set" in rows["2"]["skipped"]
    assert "prdc" not in rows["0"]["skipped"] and rows["0"]["recall"] == pytest.approx(2 / 3)
