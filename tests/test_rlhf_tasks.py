"""The arithmetic task, its exact-answer reward and the unbiased pass@k estimator (no model)."""

import itertools
import math

import numpy as np
import pytest

from rgpo_jax.rlhf import tasks


def _pass_at_k_by_enumeration(n, c, k):
  """Fraction of the k-subsets of n samples (c of them correct) that hold a correct one."""
  samples = [1] * c + [0] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration_over_subsets():
  for n in range(1, 8):
    for k in range(1, n + 1):
      c = np.arange(n + 1)
      expected = [_pass_at_k_by_enumeration(n, int(ci), k) for ci in c]
      np.testing.assert_allclose(tasks.pass_at_k(n, c, k), expected, rtol=1e-12, atol=1e-15)


def test_pass_at_k_special_cases_and_large_n():
  np.testing.assert_allclose(tasks.pass_at_k(10, np.arange(11), 1), np.arange(11) / 10)
  assert tasks.pass_at_k(200, 0, 100) == 0.0 and tasks.pass_at_k(200, 150, 100) == 1.0
  # Large binomials (C(200, 100) ~ 1e58) through the product form, vs exact integers:
  exact = 1 - math.comb(190, 100) / math.comb(200, 100)
  np.testing.assert_allclose(tasks.pass_at_k(200, 10, 100), exact, rtol=1e-12)
  rewards = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
  assert tasks.pass_at_k_of_rewards(rewards, 2) == pytest.approx((0.5 + 5 / 6 + 0) / 3)


def test_pass_at_k_refuses_bad_input_naming_it():
  with pytest.raises(ValueError, match="k=0"):
    tasks.pass_at_k(4, 1, 0)
  with pytest.raises(ValueError, match="n=3 < k=4"):
    tasks.pass_at_k(3, 1, 4)
  with pytest.raises(ValueError, match=r"c in \[0, 5\]"):
    tasks.pass_at_k(4, np.array([0, 5]), 1)
  with pytest.raises(ValueError, match="shape"):
    tasks.pass_at_k_of_rewards(np.ones(4), 1)


def test_problems_are_seeded_in_range_and_correct():
  task = tasks.ArithmeticTask(low=10, high=99, operations=("+", "-", "*"))
  a, b = task.problems(50, seed=3), task.problems(50, seed=3)
  assert a == b and a != task.problems(50, seed=4)
  for p in a:
    assert 10 <= p["a"] <= 99 and 10 <= p["b"] <= 99
    assert p["answer"] == {"+": p["a"] + p["b"], "-": p["a"] - p["b"], "*": p["a"] * p["b"]}[p["op"]]
    assert p["question"] == f"What is {p['a']} {p['op']} {p['b']}? Answer with the number only."
  assert {p["op"] for p in a} == {"+", "-", "*"}


def test_task_refuses_bad_settings_naming_them():
  with pytest.raises(ValueError, match="low=5, high=2"):
    tasks.ArithmeticTask(low=5, high=2)
  with pytest.raises(ValueError, match="'/'"):
    tasks.ArithmeticTask(operations=("+", "/"))
  with pytest.raises(ValueError, match="{c}"):
    tasks.ArithmeticTask(template="{a} {op} {c}")
  with pytest.raises(ValueError, match="count=0"):
    tasks.ArithmeticTask().problems(0, seed=0)


@pytest.mark.parametrize("completion, reward", [
    ("71", 1.0), (" 71", 1.0), ("71.", 1.0), ("**71**", 1.0), ("The answer is 71!", 1.0),
    ("\n71\n", 1.0), ("71.0", 1.0), ("= 71", 1.0), ("71, I think", 1.0),
    ("23 + 48 = 71", 0.0),  # only the first number counts
    ("711", 0.0), ("7 1", 0.0), ("71.5", 0.0), ("seventy-one", 0.0), ("", 0.0), ("-71", 0.0),
])
def test_exact_answer_reward_reads_the_first_number(completion, reward):
  assert tasks.exact_answer_reward(["q"], [completion], answer=[71]) == [reward]


def test_exact_answer_reward_negative_answers_and_lengths():
  assert tasks.exact_answer_reward(["q"] * 3, ["-5", "\u22125", "5"], answer=[-5] * 3) == [1, 1, 0]
  with pytest.raises(ValueError, match="2 completions but 1 answers"):
    tasks.exact_answer_reward(["q", "q"], ["1", "2"], answer=[1])


def test_arithmetic_task_splits_all_problems_into_disjoint_train_and_eval():
  from rgpo_jax.rlhf import prompts
  task = prompts.get_task("arithmetic")
  assert task.binary and len(task.train) == 68 and len(task.eval) == 32
  questions = [e["prompt"] for e in task.train + task.eval]
  assert len(set(questions)) == 100  # every one-digit sum exactly once
  assert not {e["prompt"] for e in task.train} & {e["prompt"] for e in task.eval}
  e = task.eval[0]
  assert task.reward_fn(prompts=[e["prompt"]] * 2, completions=[str(e["answer"]), "x"],
                        answer=[e["answer"]] * 2, mode="train") == [1.0, 0.0]
  with pytest.raises(ValueError, match="eval_count=100"):
    tasks.ArithmeticTask().split(100, seed=0)
