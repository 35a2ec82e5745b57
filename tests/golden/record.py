"""Record the golden outputs: ``python tests/golden/record.py`` (about a minute on 2 CPU cores).

Writes ``outputs.safetensors`` (tensors, ``<case>/<key>``) and ``outputs.json`` (integers) next
to this file. Run it only from a version of the code whose outputs were reviewed: the golden
test exists to show that a refactor does not change what the samplers compute.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _spawn():
    try:
        from cofi.testing import spawn
    except ImportError:
        from cofi.distributed import spawn
    return spawn


def main() -> None:
    import torch
    from safetensors.torch import save_file

    from cases import CASES, distributed_case

    torch.set_num_threads(1)
    tensors, ints = {}, {}
    results = {name: fn() for name, fn in CASES.items()}
    results["distributed-2ranks"] = _spawn()(distributed_case, 2, timeout=300)[0]
    for name, out in results.items():
        for k, v in out.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}/{k}"] = v.detach().contiguous()
            elif v is not None:
                ints[f"{name}/{k}"] = int(v)
        print(f"{name:34s} nfe {out['nfe']:6d}  best {out['best']}")
    save_file(tensors, str(HERE / "outputs.safetensors"))
    (HERE / "outputs.json").write_text(json.dumps(ints, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
