"""Turn a finished job into something the bot can serve: a merged checkpoint or an Ollama Modelfile.

    merged = merge_adapter(base_dir, adapter_dir, out_dir)        # plain transformers checkpoint
    text = modelfile("smollm2:135m-instruct", adapter_dir)         # FROM base + ADAPTER
    plan = deploy_plan(job_result)                                 # what T1's /deploy registers

For Ollama, `ADAPTER` takes a safetensors LoRA adapter directory (peft format) on the Ollama host;
the base named in `FROM` must be the model the adapter was trained on.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import UserError


def modelfile(base: str, adapter: Path | str | None = None, *, system: str | None = None,
              parameters: dict[str, Any] | None = None) -> str:
    """Ollama Modelfile text: `FROM base`, `ADAPTER path` (if any), optional SYSTEM and PARAMETER lines."""
    lines = [f"FROM {base}"]
    if adapter is not None:
        lines.append(f"ADAPTER {adapter}")
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    if system:
        lines.append('SYSTEM """' + system.replace('"""', '\\"\\"\\"') + '"""')
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, base: str, adapter: Path | str | None = None, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(modelfile(base, adapter, **kwargs))
    return path


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Fold a LoRA adapter into its base weights and save a plain checkpoint (with the tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter_dir / "adapter_config.json").exists():
        raise UserError(f"No LoRA adapter in {adapter_dir} (adapter_config.json missing).")
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(adapter_dir if (adapter_dir / "tokenizer_config.json").exists()
                                  else base_dir).save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


@dataclass(frozen=True)
class DeployPlan:
    """What `/deploy` needs: a base checkpoint and optionally an adapter (local backend: base + adapter)."""

    base_path: Path
    adapter_path: Path | None
    base_name: str  # as given at /train (smollm2, tiny-llama, a path)


def deploy_plan(workdir: Path) -> DeployPlan:
    """Read `deploy.json` that every recipe writes beside its artifacts."""
    path = workdir / "deploy.json"
    if not path.exists():
        raise UserError(f"Nothing to deploy in {workdir}: the job did not finish with a model.")
    data = json.loads(path.read_text())
    adapter = data.get("adapter_path")
    return DeployPlan(Path(data["base_path"]), Path(adapter) if adapter else None, data.get("base", ""))


def write_deploy_info(workdir: Path, base: str, base_path: Path, adapter_path: Path | None) -> Path:
    path = workdir / "deploy.json"
    path.write_text(json.dumps({"base": base, "base_path": str(base_path),
                                "adapter_path": str(adapter_path) if adapter_path else None}))
    return path


def ollama_modelfile_for(workdir: Path, ollama_base: str) -> Path:
    """Write workdir/Modelfile for `ollama create NAME -f Modelfile` (adapter jobs only)."""
    plan = deploy_plan(workdir)
    if plan.adapter_path is None:
        raise UserError("This job produced a full model, not an adapter; import it into Ollama with FROM <dir>.")
    return write_modelfile(workdir / "Modelfile", ollama_base, plan.adapter_path)
