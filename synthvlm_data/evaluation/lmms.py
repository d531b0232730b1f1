"""lmms-eval for full-scale evaluation (the `[eval]` extra, lmms-eval 0.7.3).

`run_lmms` calls lmms-eval's own `simple_evaluate` with the `SynthVLMLlava` adapter
(`lmms_adapter.py`) on lmms-eval task names: the LLaVA-1.5 suite of `llava15_suite.yaml` and the
local `synthvlm_world_vqa` task (the world suite's questions as a parquet file, no Hub). The adapter
is also registered for lmms-eval's own CLI through the `lmms_eval.models` entry point
(`lmms-eval eval --model synthvlm_llava --model_args pretrained=CHECKPOINT ...`).

The suite's datasets live on the Hugging Face Hub: offline, each task fails with one line naming
it and what to do (reach the Hub, or `--dataset-path TASK=DIR` with a `save_to_disk` folder).
"""

from __future__ import annotations

import functools
import importlib.util
import time
from importlib import resources
from pathlib import Path

import yaml

from synthvlm_data.evaluation.checkpoint import EvalInputError
from synthvlm_data.evaluation.world_suite import Items

WORLD_TASK = "synthvlm_world_vqa"
MODEL_ID = "synthvlm_llava"


def tasks_dir() -> Path:
    return Path(str(resources.files("synthvlm_data.evaluation") / "lmms_tasks"))


@functools.cache
def llava15_suite() -> dict:
    return yaml.safe_load((resources.files("synthvlm_data.evaluation") / "llava15_suite.yaml").read_text())


def suite_tasks() -> list[str]:
    return [t["task"] for t in llava15_suite()["lmms_eval"]]


def manifests():
    """The `lmms_eval.models` entry point: class paths only, lmms_eval is imported when it runs."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path="synthvlm_data.evaluation.lmms_adapter.SynthVLMLlava")]


def require_lmms_eval() -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        raise EvalInputError("--suite lmms needs lmms-eval: pip install 'synthvlm-data[eval]'")


def write_world_task_data(items: Items, path: Path) -> Path:
    """The world suite's questions as the local task's parquet (same items, same bytes per seed)."""
    import io

    from datasets import Dataset, Features, Image, Sequence, Value

    from synthvlm_data.world.render import render

    pngs = {}
    for i, scene in enumerate(items.scenes):
        buf = io.BytesIO()
        render(scene).save(buf, format="PNG", optimize=False, compress_level=6)
        pngs[i] = buf.getvalue()
    qs = items.questions
    features = Features({"question_id": Value("string"), "image": Image(), "question": Value("string"),
                         "answer": Value("string"), "answers": Sequence(Value("string")), "qtype": Value("string")})
    ds = Dataset.from_dict({
        "question_id": [q.id for q in qs], "image": [{"bytes": pngs[q.scene_index], "path": None} for q in qs],
        "question": [q.question for q in qs], "answer": [q.answer for q in qs],
        "answers": [list(q.answers) for q in qs], "qtype": [q.qtype for q in qs],
    }, features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def parse_dataset_paths(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        task, sep, folder = v.partition("=")
        if not sep or not task or not folder:
            raise EvalInputError(f"--dataset-path {v!r}: expected TASK=DIR (a datasets save_to_disk folder)")
        if not Path(folder).expanduser().is_dir():
            raise EvalInputError(f"--dataset-path {task}={folder}: no such directory; save the dataset there with "
                                 "datasets' save_to_disk first")
        out[task] = str(Path(folder).expanduser().resolve())
    return out


def _hub_of(task: str) -> str | None:
    return next((t["hub"] for t in llava15_suite()["lmms_eval"] if t["task"] == task), None)


def offline_error(tasks: str | list[str], reason: str) -> EvalInputError:
    """One line: which tasks need the Hub, and the two ways out."""
    tasks = [tasks] if isinstance(tasks, str) else tasks
    if len(tasks) == 1:
        hub = _hub_of(tasks[0])
        what = f"lmms task {tasks[0]}: its dataset{f' ({hub})' if hub else ''} is"
        flag, it = f"--dataset-path {tasks[0]}=DIR", "it"
    else:
        what = f"lmms tasks {', '.join(tasks)}: their datasets are"
        flag, it = "--dataset-path TASK=DIR for each", "them"
    return EvalInputError(
        f"{what} on the Hugging Face Hub, which cannot be reached here ({reason}); run where the Hub is reachable, "
        f"or save {it} once elsewhere with datasets' save_to_disk and pass {flag}")


def _patch_lmms_eval() -> None:
    """lmms-eval 0.7.3 on this stack: its reentrant-filelock patch imports `filelock._api` (gone in
    filelock 4; `[eval]` pins filelock<4, and the patch matters only for multi-rank runs)."""
    import lmms_eval.evaluator as ev

    if importlib.util.find_spec("filelock._api") is None:
        ev._enable_reentrant_filelocks._patched = True


def run_lmms(checkpoint: Path, tasks: list[str], items: Items | None, work_dir: Path, *, limit: int | None = None,
             dataset_paths: dict[str, str] | None = None, seed: int = 0, bootstrap_iters: int = 1000,
             device: str | None = None, dtype: str | None = None) -> dict | None:
    """lmms-eval's `simple_evaluate` on `tasks` with the checkpoint's adapter; the results dict on
    the main process, None on the other ranks of a multi-process launch (they answer their share of
    every task; rank 0 gathers and scores)."""
    from synthvlm_data.models.refs import hub_offline

    require_lmms_eval()
    dataset_paths = dataset_paths or {}
    unknown = [t for t in dataset_paths if t not in tasks]
    if unknown:
        raise EvalInputError(f"--dataset-path {unknown[0]}: not among the tasks run ({', '.join(tasks)})")
    need_hub = [t for t in tasks if t != WORLD_TASK and t not in dataset_paths]
    if need_hub and hub_offline():
        raise offline_error(need_hub, "HF_HUB_OFFLINE is set")

    import lmms_eval
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from synthvlm_data.evaluation.lmms_adapter import SynthVLMLlava

    _patch_lmms_eval()
    world_data = work_dir / "world_vqa.parquet"
    specs: list = []
    for task in tasks:
        if task == WORLD_TASK:
            specs.append({"task": task, "dataset_kwargs": {"data_files": {"test": str(world_data)}}})
        elif task in dataset_paths:
            specs.append({"task": task, "dataset_path": dataset_paths[task], "dataset_kwargs": {"load_from_disk": True}})
        else:
            specs.append(task)
    builtin = any(t != WORLD_TASK for t in tasks)  # indexing lmms-eval's ~300 task folders takes ~18 s
    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=builtin)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise EvalInputError(f"--tasks {unknown[0]}: not an lmms-eval task (the LLaVA-1.5 suite: "
                             f"{', '.join(suite_tasks())}; local: {WORLD_TASK})")
    model = SynthVLMLlava(pretrained=str(checkpoint), device=device, dtype=dtype)
    main = model.rank == 0
    if WORLD_TASK in tasks and main:  # one writer; the other ranks read it after the barrier
        write_world_task_data(items, world_data)
    model.accelerator.wait_for_everyone()
    t0 = time.time()
    results, samples = {}, {}
    for task, spec in zip(tasks, specs):
        try:
            out = simple_evaluate(model=model, tasks=[spec], task_manager=manager, batch_size=1, device=model.device,
                                  limit=limit, bootstrap_iters=bootstrap_iters, log_samples=True, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        except Exception as err:  # noqa: BLE001 - lmms-eval wraps the Hub failure in tenacity's RetryError
            chain, e = [], err
            while e is not None:
                chain.append(f"{type(e).__name__}: {e}")
                e = e.__cause__ or e.__context__
            text = " | ".join(chain)
            if "Hub" in text or "ConnectionError" in text or "OfflineModeIsEnabled" in text:
                raise offline_error(task, chain[-1].splitlines()[0][:160]) from None
            raise
        if out is None:  # non-main ranks
            continue
        results.update(out["results"])
        for name, rows in (out.get("samples") or {}).items():
            samples[name] = [_sample(r) for r in sorted(rows, key=lambda r: r["doc_id"])]
        n_samples = {k: v.get("effective", v.get("original")) for k, v in out.get("n-samples", {}).items()}
        results.setdefault("_n", {}).update(n_samples)
    if not main:
        return None
    n = results.pop("_n", {})
    return {"suite": "lmms", "device": model.device.split(":")[0], "dtype": model.dtype, "tasks": tasks,
            "results": results, "n_samples": n, "limit": limit, "samples": samples,
            "lmms_eval_version": getattr(lmms_eval, "__version__", None) or _version("lmms_eval"),
            "seconds": round(time.time() - t0, 1)}


def _sample(row: dict) -> dict:
    """One logged lmms-eval sample: doc id, target, the model's (filtered) response, its metrics."""
    resp = row.get("filtered_resps")
    while isinstance(resp, (list, tuple)) and resp:
        resp = resp[0]
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "doc_id"}
    return {"doc_id": row["doc_id"], "target": row.get("target"), "prediction": resp, **metrics}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist.replace("_", "-"))
    except PackageNotFoundError:
        return None
