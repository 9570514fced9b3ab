"""The float tolerances of the tests, each derived from the arithmetic that makes the numbers compared.

Two computations of the same model differ on another CPU, or on this one with other shapes, because they round
differently: another kernel (MKL's or oneDNN's, chosen per CPU and per process, docs/performance.md), another
summation order (padding, batch size, a cache), AVX-512 or AVX2. A tolerance must cover that and nothing more, so a
bug still fails it; a tolerance read off one machine's results covers neither (issue 20: a 1e-6 that held on
Intel Xeon failed on AMD EPYC).

float32 keeps 24 significant bits: unit roundoff `U32` = 2**-24 (6e-8); bfloat16 keeps 8: `U_BF16` = 2**-8 (4e-3).
A value that went through n roundings is within n * u of its exact value relative to the magnitudes summed (the
classical worst case), and within LAMBDA * sqrt(n) * u but for a probability of about 2 exp(-LAMBDA**2 / 2)
(1.5e-8 for 6) when rounding errors are independent and of mean zero (Higham and Mary, "A new approach to
probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019). The worst case needs every one of a thousand
roundings to err the same way; the probabilistic bound is the one used here, with LAMBDA = 6.
"""
from __future__ import annotations

import math

U32 = 2.0 ** -24
U_BF16 = 2.0 ** -8
LAMBDA = 6

# Roundings on the longest path from an input to an output of the tiny test models (tests/model_factory.py: width
# 32, feed-forward 64, 2 layers, at most 128 positions): per layer the q/k/v and output projections (32 terms
# each), attention scores (16), softmax and values (128 each), two feed-forward products (32, 64) and two norms
# (32), about 500; two layers, the embeddings' norm and the head: 2**10.
TINY_MODEL_ROUNDINGS = 2 ** 10
# An output of a tiny float32 model, relative to the largest magnitude on its path (1.1e-5).
FORWARD_RTOL = LAMBDA * math.sqrt(TINY_MODEL_ROUNDINGS) * U32

# Largest logits of the tiny models (a property of their weights, the same on every CPU to float32 rounding):
# sharpened classifiers 3.5 (DistilBERT) and 1.2 (BART), GPT-2 4.6, T5 drawn at initializer_factor 2.0 17 and at
# 3.0 38 (the CTranslate2 tests' softer T5).
CLASSIFIER_LOGITS = 4.0
GENERATOR_LOGITS = {"gpt2": 5.0, "t5": 20.0, "t5-soft": 40.0}

# A classifier's logits move by at most FORWARD_RTOL * CLASSIFIER_LOGITS; a softmax or sigmoid output moves by at
# most half of that (|dp_i| = p_i |dz_i - sum_j p_j dz_j| <= 2 p_i (1 - p_i) max|dz| <= max|dz| / 2): 2.3e-5.
LOGIT_ATOL = FORWARD_RTOL * CLASSIFIER_LOGITS
PROBABILITY_ATOL = LOGIT_ATOL / 2
# A softmax over k <= 8 labels sums to 1 within (k + 3) u: each exp, the k-term sum and the division round once.
PROBABILITY_SUM_ATOL = 11 * U32


def confidence_rtol(model: str) -> float:
    """A generation's confidence exp(mean log p) compared with one computed otherwise (a teacher-forced pass,
    another runtime): log p of a token moves by at most 2 max|dz|, so exp of their mean by that ratio."""
    return 2 * FORWARD_RTOL * GENERATOR_LOGITS[model]


def confidence_tolerance(module_name: str) -> dict[str, float]:
    """`pytest.approx` keywords for an answer's confidence of a module's tiny model: a probability (classifiers)
    or a generation's confidence (generators)."""
    generator = {"models.dialogpt_large": "gpt2", "models.t5_email": "t5"}.get(module_name)
    return {"rel": confidence_rtol(generator)} if generator else {"abs": PROBABILITY_ATOL}


# bfloat16 rounds the weights and every layer's output to 8 bits: about 20 roundings on the path to a classifier's
# logit, so logits drift from float32's by about sqrt(20) * U_BF16 * CLASSIFIER_LOGITS (0.07) and probabilities by
# half that. The drift is the same on every CPU up to float32 rounding (each rounds the same float32 values to
# bfloat16), so the tolerance covers the drift itself, not a spread between CPUs; the worst case,
# 20 * U_BF16 * CLASSIFIER_LOGITS / 2 (0.16), would let a wrong label pass. Measured: 3e-3.
BFLOAT16_PROBABILITY_ATOL = math.sqrt(20) * U_BF16 * CLASSIFIER_LOGITS / 2
# Dynamic int8 rounds both operands of each of the ~14 dense products on the path (2 layers x 6, and the head) to
# 1/254 of their range, as bfloat16 rounds to 2**-8 of each value: 28 roundings, the same on every CPU (0.04).
# Measured: 6e-3 (docs/performance.md).
INT8_PROBABILITY_ATOL = math.sqrt(28) * U_BF16 * CLASSIFIER_LOGITS / 2
