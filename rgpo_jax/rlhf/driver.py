"""The `rgpo rlhf` driver: one method × N seeds on one task, evaluated the same way for all.

Per seed (seeds run one after another): a fresh policy and a frozen reference, both copies of
the loaded model; the method's runner (`rgpo_jax.rlhf.methods`); then for each step
    batch  = `batch_size` training prompts drawn from (seed, step) only,
    key    = the sampling key of (seed, step),
    runner.step(batch, key) → the method's metrics,
with an evaluation (`rgpo_jax.rlhf.evaluation`: reward and KL̂(π_θ‖π_ref) of the policy's own
samples on the task's fixed evaluation prompts) at step 0, every `eval_every` steps and at the
end. Because batches and keys depend on (seed, step) only, a run resumed from a checkpoint
trains on exactly what an uninterrupted run would.

Files in the run folder (like `rgpo train`'s):
  config.json     the `RLHFConfig`, the task's size and the resolved model file;
  metrics.jsonl   one line per (seed, step): {"seed", "step", "seconds" (wall), "cpu_seconds"
                  (of this process, all threads), "reward_mean", "loss", method metrics ...};
                  lines of evaluation steps also hold "eval_reward", "eval_kl" and
                  "eval_cpu_seconds", and for a
                  binary task (e.g. arithmetic) "eval_pass@1" and "eval_pass@<pass_k>" (step
                  0's line holds only the evaluation);
  samples.jsonl   every evaluation completion of step 0 ("when": "before") and of the last
                  step ("after"): prompt, completion, reward, KL̂;
  summary.json    final evaluation reward and KL (and pass@1, pass@k for a binary task) per
                  seed, mean ± std over seeds, seconds per step, parameter checksums;
  plots/          reward over steps, and reward vs KL to the reference (the Pareto view);
  runs/seed<S>.json  a finished seed's summary (a resumed run skips finished seeds);
  checkpoints/seed<S>/  the running seed's checkpoint (`rgpo_jax.training.checkpoint`, orbax):
                  the runner's state (policy, optimizer, critic ...) and the step. Written
                  every `checkpoint_minutes` and on Ctrl-C; removed when the seed finishes
                  (a full SmolLM2 checkpoint with Adam's moments is ~1.6 GB);
  policy/seed<S>/ with `save_policy`: a finished seed's trained policy parameters (same
                  checkpoint format, no optimizer state), read back by `load_policy`.

Ctrl-C stops after the current step, saves a checkpoint, and raises
`rgpo_jax.training.io.TrainingInterrupted`; `run_rlhf(..., resume=True)` continues.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Callable

import jax
import numpy as np

from rgpo_jax.rlhf_cli import RLHFConfig, model_path, validate
from rgpo_jax.training import checkpoint as ckpt_lib
from rgpo_jax.training.io import TrainingInterrupted, graceful_sigint, json_floats

CHECKPOINTS = "checkpoints"
POLICIES = "policy"
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")
_TRAIN_STREAM, _EVAL_STREAM, _PROMPT_STREAM = 1, 2, 3  # fold_in tags of the seed's key


def _seed_dir(out: str, kind: str, seed: int) -> str:
  """`<out>/<kind>/seed<S>`: a seed's checkpoint (CHECKPOINTS) or saved policy (POLICIES)."""
  return os.path.join(out, kind, f"seed{seed}")


def _seed_metadata(config: RLHFConfig, seed: int) -> dict[str, Any]:
  """What a seed's checkpoints and saved policy are tagged with (checked on restore)."""
  return {"method": config.method, "seed": seed, "config": config.to_dict()}


# ---------------------------------------------------------------------------------------------
# What a run trains on: prompts, batches and keys as functions of (seed, step).


def format_prompt(tokenizer, text: str) -> str:
  """The user message in the tokenizer's chat template (generation prompt added), or as it is
  when the tokenizer has none (tunix's test vocabulary)."""
  if getattr(tokenizer, "chat_template", None):
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
  return text


def training_input(examples, tokenizer) -> dict[str, list]:
  """tunix's training input {"prompts": [...], **fields} from task examples."""
  batch = {"prompts": [format_prompt(tokenizer, e["prompt"]) for e in examples]}
  for key in examples[0]:
    if key != "prompt":
      batch[key] = [e[key] for e in examples]
  return batch


def batch_indices(seed: int, step: int, num_prompts: int, batch_size: int) -> np.ndarray:
  """Training prompts of a step: a draw without replacement (with, if the task has fewer
  prompts than a batch) from a generator seeded by (seed, step)."""
  rng = np.random.default_rng([seed, step, _PROMPT_STREAM])
  return rng.choice(num_prompts, batch_size, replace=batch_size > num_prompts)


def step_key(seed: int, step: int) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _TRAIN_STREAM), step)


def eval_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM)


def prompt_length(tokenizer, prompts) -> int:
  """Tokens of the longest prompt, rounded up to a power of 2 (tunix pads prompts to it)."""
  from tunix.generate import tokenizer_adapter  # pylint: disable=import-outside-toplevel
  adapter = tokenizer_adapter.TokenizerAdapter(tokenizer)
  longest = max(len(adapter.encode(p)) for p in prompts)
  return 1 << max(3, math.ceil(math.log2(max(longest, 1))))


# ---------------------------------------------------------------------------------------------
# The run folder.


def check_run_folder(out: str, resume: bool) -> None:
  """A new run needs a new or empty folder; a resumed one a folder with config.json and no
  summary.json."""
  if resume:
    if not os.path.isfile(os.path.join(out, "config.json")):
      raise ValueError(f"rgpo rlhf: --resume needs a run folder holding config.json, got {out!r}")
    if os.path.exists(os.path.join(out, "summary.json")):
      raise ValueError(f"rgpo rlhf: run {out!r} already finished (summary.json exists); "
                       "nothing to resume")
    return
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f"rgpo rlhf: --out {out!r} already holds files; choose a new folder "
                     f"(continue an unfinished run with `rgpo rlhf --resume {out}`)")


def _write_json(path: str, content: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(content, f, indent=2)
  os.replace(tmp, path)


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  records = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          break  # a line cut by a kill: nothing after it was complete
  return records


def _keep_records(path: str, keep: Callable[[dict], bool]) -> list[dict[str, Any]]:
  """Rewrites a .jsonl file keeping the records `keep` accepts (atomically); returns them."""
  records = [r for r in _read_jsonl(path) if keep(r)]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  os.replace(tmp, path)
  return records


def _metric_line(record: dict[str, Any]) -> str:
  """One metrics.jsonl line; floats at float32 precision, non-finite as null."""
  out = {}
  for k, v in record.items():
    out[k] = json.loads(json_floats([v])[0]) if isinstance(v, float) else v
  return json.dumps(out)


# ---------------------------------------------------------------------------------------------
# One seed.


@dataclasses.dataclass
class _Setup:
  """What every seed of a run shares: the loaded model, tokenizer, task and prompt layout."""

  config: RLHFConfig
  graphdef: Any
  initial_state: Any
  tokenizer: Any
  task: Any
  max_prompt_length: int
  train_examples: tuple
  eval_batch: dict[str, list]
  out: str | None


def fresh_model(graphdef, state):
  """A model with variables and buffers of its own, holding `state`'s values.

  `nnx.merge(graphdef, state)` twice returns two modules sharing the same Variables: training
  one in place (tunix's DPO trainer does) would move the other (the reference) and the next
  seed's starting weights (measured: `dpo`'s loss stayed log 2 and its KL to the reference 0).
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


class _SeedRun:
  """A seed's runner, evaluation and checkpoints."""

  def __init__(self, setup: _Setup, seed: int, log: Callable[[str], None]):
    from flax import nnx  # pylint: disable=import-outside-toplevel
    from rgpo_jax.rlhf import evaluation, methods  # pylint: disable=import-outside-toplevel
    self.setup, self.seed, cfg = setup, seed, setup.config
    policy = fresh_model(setup.graphdef, setup.initial_state)
    self.reference = fresh_model(setup.graphdef, setup.initial_state)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
    ctx = methods.MethodContext(cfg.method, policy, self.reference, setup.tokenizer, setup.task,
                                cfg, seed, mesh, setup.max_prompt_length, setup.out)
    self.runner = methods.get_method(cfg.method)(ctx)
    # Built on the runner's policy: its weights are swapped in at every evaluation, which needs
    # the placement the runner gave them (tunix's cluster moves them onto its mesh).
    self.sampler = evaluation.PolicySampler(self.runner.policy, setup.tokenizer,
                                            setup.max_prompt_length, cfg.max_new_tokens)
    self.checkpoint_dir = (None if setup.out is None
                           else _seed_dir(setup.out, CHECKPOINTS, seed))
    self.start_step = self._restore(log)

  def _metadata(self) -> dict[str, Any]:
    return _seed_metadata(self.setup.config, self.seed)

  def _restore(self, log) -> int:
    if self.checkpoint_dir is None or ckpt_lib.latest_step(self.checkpoint_dir) is None:
      return 0
    step, state = ckpt_lib.restore(self.checkpoint_dir, self.runner.checkpoint_state(),
                                   self._metadata())
    self.runner.restore_checkpoint_state(state)
    log(f"seed {self.seed}: resumed from the checkpoint of step {step}")
    return step

  def save(self, step: int) -> None:
    with ckpt_lib.Checkpointer(self.checkpoint_dir, self._metadata(), keep=1) as ckpt:
      ckpt.save(step, self.runner.checkpoint_state())

  def save_policy(self, step: int) -> None:
    path = _seed_dir(self.setup.out, POLICIES, self.seed)
    shutil.rmtree(path, ignore_errors=True)  # left by a process stopped before the seed's record
    with ckpt_lib.Checkpointer(path, self._metadata(), keep=1) as ckpt:
      ckpt.save(step, _policy_params(self.runner.policy))

  def evaluate(self):
    from rgpo_jax.rlhf import evaluation  # pylint: disable=import-outside-toplevel
    s = self.setup
    fields = {k: v for k, v in s.eval_batch.items() if k != "prompts"}
    c0 = time.process_time()
    result = evaluation.evaluate(self.sampler, self.runner.policy, self.reference,
                                 s.eval_batch["prompts"], fields, s.task.reward_fn,
                                 eval_key(self.seed), s.config.eval_samples)
    result.cpu_seconds = time.process_time() - c0
    return result

  def step(self, step: int) -> dict[str, float]:
    s = self.setup
    idx = batch_indices(self.seed, step, len(s.train_examples), s.config.batch_size)
    batch = training_input([s.train_examples[i] for i in idx], s.tokenizer)
    return self.runner.step(batch, step_key(self.seed, step))

  def close(self) -> None:
    self.runner.close()


def _eval_fields(evaluation, setup: _Setup) -> dict[str, float]:
  """Evaluation reward and KL; for a binary task also pass@1 and pass@k (k = `pass_k`), the
  unbiased estimator over each prompt's `eval_samples` completions."""
  fields = {"eval_reward": evaluation.reward_mean, "eval_kl": evaluation.kl_mean,
            "eval_cpu_seconds": evaluation.cpu_seconds}
  if setup.task.binary:
    from rgpo_jax.rlhf import tasks  # pylint: disable=import-outside-toplevel
    rewards = evaluation.rewards.reshape(-1, setup.config.eval_samples)
    for k in sorted({1, setup.config.pass_k}):
      if k <= rewards.shape[1]:
        fields[f"eval_pass@{k}"] = tasks.pass_at_k_of_rewards(rewards, k)
  return fields


class _Files:
  """Appends to metrics.jsonl and samples.jsonl (no-ops without a run folder)."""

  def __init__(self, out: str | None):
    self.out = out
    self.records: list[dict[str, Any]] = []

  def metrics(self, record: dict[str, Any]) -> None:
    self.records.append(record)
    if self.out is not None:
      with open(os.path.join(self.out, "metrics.jsonl"), "a") as f:
        f.write(_metric_line(record) + "\n")

  def samples(self, seed: int, step: int, when: str, evaluation) -> None:
    if self.out is None:
      return
    with open(os.path.join(self.out, "samples.jsonl"), "a") as f:
      for rec in evaluation.records():
        f.write(json.dumps({"seed": seed, "step": step, "when": when, **rec}) + "\n")


def _policy_params(policy) -> dict[str, Any]:
  from flax import nnx  # pylint: disable=import-outside-toplevel
  return nnx.to_pure_dict(nnx.state(policy, nnx.Param))


def _run_seed(setup: _Setup, seed: int, files: _Files, bar, stop, log,
              should_stop: Callable[[int, int], bool] | None) -> dict[str, Any]:
  """Train one seed to the end; returns its summary. Raises TrainingInterrupted when stopped."""
  cfg = setup.config
  run = _SeedRun(setup, seed, log)
  last_save, step = time.monotonic(), run.start_step
  try:
    if step == 0:
      first = run.evaluate()
      files.metrics({"seed": seed, "step": 0, **_eval_fields(first, setup)})
      files.samples(seed, 0, "before", first)
    bar.update(step)
    seconds, cpu_seconds, final = [], [], None
    while step < cfg.steps:
      t0, c0 = time.perf_counter(), time.process_time()
      metrics = run.step(step + 1)
      seconds.append(time.perf_counter() - t0)
      cpu_seconds.append(time.process_time() - c0)
      step += 1
      record = {"seed": seed, "step": step, "seconds": seconds[-1],
                "cpu_seconds": cpu_seconds[-1], **metrics}
      if step % cfg.eval_every == 0 or step == cfg.steps:
        final = run.evaluate()
        record.update(_eval_fields(final, setup))
      files.metrics(record)
      bar.update(1)
      bar.set_postfix(seed=seed, reward=f"{metrics['reward_mean']:.3f}",
                      **({"eval_kl": f"{final.kl_mean:.3f}"} if final is not None else {}))
      stopping = stop.requested or (should_stop is not None and should_stop(seed, step))
      due = cfg.checkpoint_minutes and time.monotonic() - last_save >= 60 * cfg.checkpoint_minutes
      if run.checkpoint_dir is not None and step < cfg.steps and (stopping or due):
        run.save(step)
        last_save = time.monotonic()
      if stopping and step < cfg.steps:
        raise TrainingInterrupted(setup.out, step, cfg.steps)
    if final is None:  # resumed exactly at the end
      final = run.evaluate()
    if cfg.save_policy and setup.out is not None:
      run.save_policy(step)
    files.samples(seed, step, "after", final)
    pass_at = {f"final_{k}": v for k, v in _eval_fields(final, setup).items()
               if k.startswith("eval_pass@")}
    return {"seed": seed, "final_eval_reward": final.reward_mean,
            "final_eval_kl": final.kl_mean, **pass_at,
            # The first step of a process compiles; later ones are the cost of a step.
            "seconds_per_step": float(np.mean(seconds[1:])) if len(seconds) > 1 else None,
            "cpu_seconds_per_step": (float(np.mean(cpu_seconds[1:])) if len(cpu_seconds) > 1
                                     else None),
            "first_step_seconds": seconds[0] if seconds else None,
            "params_checksum": ckpt_lib.params_checksum(_policy_params(run.runner.policy))}
  finally:
    run.close()


# ---------------------------------------------------------------------------------------------
# The run.


def _mean_std(values) -> tuple[float | None, float | None]:
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return None, None
  return float(np.mean(values)), float(np.std(values))


def summarize(config: RLHFConfig, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
  reward, reward_std = _mean_std([s["final_eval_reward"] for s in per_seed])
  kl, kl_std = _mean_std([s["final_eval_kl"] for s in per_seed])
  step_s, _ = _mean_std([s["seconds_per_step"] for s in per_seed])
  cpu_s, _ = _mean_std([s["cpu_seconds_per_step"] for s in per_seed])
  pass_at = {}
  for key in sorted({k for s in per_seed for k in s if k.startswith("final_eval_pass@")}):
    pass_at[key + "_mean"], pass_at[key + "_std"] = _mean_std([s.get(key) for s in per_seed])
  return {"method": config.method, "task": config.task, "advantage": config.advantage,
          **pass_at, "num_seeds": len(per_seed),
          "steps": config.steps, "final_eval_reward_mean": reward,
          "final_eval_reward_std": reward_std, "final_eval_kl_mean": kl,
          "final_eval_kl_std": kl_std, "seconds_per_step": step_s,
          "cpu_seconds_per_step": cpu_s, "per_seed": per_seed}


def load_default_model(config: RLHFConfig):
  """(model, tokenizer) from `config.model` or SmolLM2-135M-Instruct."""
  from rgpo_jax.rlhf import gguf_llama  # pylint: disable=import-outside-toplevel
  model, tokenizer, _ = gguf_llama.load_llama_gguf(model_path(config))
  return model, tokenizer


def _prepare(config: RLHFConfig, out: str | None, resume: bool, load_model, task):
  """Validate, load, and open the run folder: the `_Setup`."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from rgpo_jax.rlhf import prompts  # pylint: disable=import-outside-toplevel
  task = task if task is not None else prompts.get_task(config.task)
  if out is not None:
    check_run_folder(out, resume)
  model, tokenizer = (load_model or load_default_model)(config)
  graphdef, initial_state = nnx.split(model)
  train = training_input(task.train, tokenizer)["prompts"]
  eval_batch = training_input(task.eval, tokenizer)
  setup = _Setup(config, graphdef, initial_state, tokenizer, task,
                 prompt_length(tokenizer, train + eval_batch["prompts"]), tuple(task.train),
                 eval_batch, out)
  if out is not None and not resume:
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, "config.json"), {
        "config": config.to_dict(), "task": {"name": task.name, "train_prompts": len(task.train),
                                              "eval_prompts": len(task.eval)},
        "model_file": None if load_model else model_path(config),
        "max_prompt_length": setup.max_prompt_length})
  return setup


def run_rlhf(config: RLHFConfig, out: str | None = None, *, resume: bool = False,
             load_model: Callable[[RLHFConfig], tuple[Any, Any]] | None = None, task=None,
             progress: bool = True, log: Callable[[str], None] = print,
             should_stop: Callable[[int, int], bool] | None = None) -> dict[str, Any]:
  """Run (or, with `resume`, continue) an experiment; returns the summary (module docstring).

  Args:
    config: the experiment (validated here, before any model is loaded).
    out: the run folder (None: write nothing, no checkpoints).
    resume: continue the unfinished run in `out` (pass its own config, e.g. `load_config`).
    load_model: `config -> (model, tokenizer)` instead of loading the GGUF file (tests inject a
      tiny tunix model this way).
    task: a `prompts.Task` instead of `prompts.get_task(config.task)`.
    progress: show a tqdm progress bar.
    should_stop: `(seed, step) -> bool`, checked after each step like Ctrl-C (tests).
  """
  validate(config, check_model_file=load_model is None)
  setup = _prepare(config, out, resume, load_model, task)
  files = _Files(out)
  done: dict[int, dict[str, Any]] = {}
  seeds = [config.seed + i for i in range(config.seeds)]
  if resume:
    for seed in seeds:
      path = os.path.join(out, "runs", f"seed{seed}.json")
      if os.path.exists(path):
        with open(path) as f:
          done[seed] = json.load(f)
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=config.seeds * config.steps, unit="step", desc=f"rlhf {config.method}",
             disable=not progress, initial=len(done) * config.steps)
  try:
    with graceful_sigint(enabled=out is not None) as stop:
      for seed in seeds:
        if seed in done:
          continue
        if stop.requested:  # Ctrl-C during the previous seed's last step: start no new seed
          raise TrainingInterrupted(out, 0, config.steps)
        if resume:
          _truncate_seed(out, seed)
        done[seed] = _run_seed(setup, seed, files, bar, stop, log, should_stop)
        if out is not None:
          os.makedirs(os.path.join(out, "runs"), exist_ok=True)
          _write_json(os.path.join(out, "runs", f"seed{seed}.json"), done[seed])
          shutil.rmtree(_seed_dir(out, CHECKPOINTS, seed), ignore_errors=True)
  finally:
    bar.close()
  summary = summarize(config, [done[s] for s in seeds])
  if out is not None:
    _write_json(os.path.join(out, "summary.json"), summary)
    try:
      from rgpo_jax.rlhf import plot  # pylint: disable=import-outside-toplevel
      summary["plots"] = plot.plot_rlhf_runs([out], os.path.join(out, "plots"))
    except Exception as e:  # pylint: disable=broad-except  # a plot never fails a finished run
      log(f"rgpo rlhf: plots not drawn ({type(e).__name__}: {e}); draw them with "
          f"rgpo rlhf-plot {out} --out {os.path.join(out, 'plots')}")
  return summary


def _truncate_seed(out: str, seed: int) -> None:
  """Before a seed (re)starts: keep its metrics and samples only up to its checkpoint."""
  step = ckpt_lib.latest_step(_seed_dir(out, CHECKPOINTS, seed)) or 0
  keep = lambda r: r.get("seed") != seed or (r["step"] <= step and step > 0)
  _keep_records(os.path.join(out, "metrics.jsonl"), keep)
  _keep_records(os.path.join(out, "samples.jsonl"),
                lambda r: r.get("seed") != seed or (r["when"] == "before" and step > 0))


def load_policy(out: str, seed: int,
                load_model: Callable[[RLHFConfig], tuple[Any, Any]] | None = None):
  """A finished seed's trained policy from a run made with `save_policy`.

  Args:
    out: the run folder.
    seed: which seed (its `policy/seed<S>/` must exist).
    load_model: as in `run_rlhf` (None: the run's GGUF model file).

  Returns:
    (model, tokenizer): the run's model architecture holding the seed's final parameters; their
    checksum equals the seed's `params_checksum` in summary.json.

  Raises:
    FileNotFoundError: no saved policy for `seed` (names the saved ones), before any model is
      loaded. `CheckpointMismatchError` if the folder's policy belongs to another run.
  """
  from flax import nnx  # pylint: disable=import-outside-toplevel
  config = load_config(out)
  path = _seed_dir(out, POLICIES, seed)
  if ckpt_lib.latest_step(path) is None:
    policies = os.path.join(out, POLICIES)
    saved = sorted(os.listdir(policies)) if os.path.isdir(policies) else []
    raise FileNotFoundError(
        f"rgpo rlhf: no saved policy for seed {seed} in {out!r} (saved: "
        f"{', '.join(saved) or 'none; run with --save-policy'})")
  model, tokenizer = (load_model or load_default_model)(config)
  _, params = ckpt_lib.restore(path, _policy_params(model), _seed_metadata(config, seed))
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model, tokenizer


def load_config(out: str) -> RLHFConfig:
  """The `RLHFConfig` of a run folder (for `--resume`)."""
  if not os.path.isfile(os.path.join(out, "config.json")):
    raise ValueError(f"rgpo rlhf: --resume needs a run folder holding config.json, got {out!r}")
  with open(os.path.join(out, "config.json")) as f:
    return RLHFConfig.from_dict(json.load(f)["config"])
