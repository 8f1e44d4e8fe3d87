"""Scale-out on Ray (an optional extra: `pip install 'sbert-cli[ray]'`).

`ray_encode`: `sbert encode --ray`, the model on Ray workers, the store a local run's.
`ray_index`: `sbert index --partitions N --ray`, partitions built as Ray tasks.
`paths`: the check that every worker sees the store; `session`: starting and stopping Ray.
Nothing here imports `ray` until a function is called.
"""

from sbert_cli.distributed.ray_encode import RayOptions, encode_on_ray
from sbert_cli.distributed.session import RAY_EXTRA, check_address, import_ray

__all__ = ["RAY_EXTRA", "RayOptions", "check_address", "encode_on_ray", "import_ray"]
