"""``[runner.ray]`` settings (imports no ray)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm.errors import UserError

NAMESPACE = "tuneterm"


@dataclass
class RayConfig:
    """``[runner.ray]`` in WS/.tuneterm/config.toml."""

    address: str = "local"  # "local" | "auto" | "HOST:PORT" | "ray://HOST:PORT"
    gpus_per_session: float = 1.0
    cpus_per_session: float = 1.0
    resources: dict = field(default_factory=dict)  # custom Ray resources per session (per rank)
    temp_dir: str | None = None  # the local head's files (address = "local" only)


RAY_KEYS = ("address", "gpus_per_session", "cpus_per_session", "resources", "temp_dir")


def parse_ray_config(raw: object, where: str) -> RayConfig:
    """Check ``[runner.ray]``; a bad value is one UserError line naming the key."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: [runner.ray] must be a table")
    unknown = sorted(set(raw) - set(RAY_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown [runner.ray] keys {', '.join(unknown)} (known: {', '.join(RAY_KEYS)})")
    cfg = RayConfig()
    if "address" in raw:
        a = raw["address"]
        if not isinstance(a, str) or not a.strip() or (a not in ("local", "auto") and ":" not in a):
            raise UserError(f"{where}: [runner.ray] address must be \"local\", \"auto\", \"HOST:PORT\" or "
                            f"\"ray://HOST:PORT\" (got {a!r})")
        cfg.address = a.strip()
    for k in ("gpus_per_session", "cpus_per_session"):
        if k in raw:
            v = raw[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v:
                raise UserError(f"{where}: [runner.ray] {k} must be a number >= 0 (got {v!r})")
            setattr(cfg, k, float(v))
    if "resources" in raw:
        r = raw["resources"]
        if not isinstance(r, dict) or not all(isinstance(k, str) and not isinstance(v, bool)
                                              and isinstance(v, (int, float)) and v > 0 for k, v in r.items()):
            raise UserError(f"{where}: [runner.ray] resources must map names to positive numbers (got {r!r})")
        cfg.resources = {k: float(v) for k, v in r.items()}
    if "temp_dir" in raw:
        t = raw["temp_dir"]
        if not isinstance(t, str) or not t.startswith("/"):
            raise UserError(f"{where}: [runner.ray] temp_dir must be an absolute path (got {t!r})")
        if len(t) > 40:  # Ray puts sockets ~60 characters below it; Unix sockets stop at 107
            raise UserError(f"{where}: [runner.ray] temp_dir must be at most 40 characters (Ray's socket paths "
                            f"live under it): {t!r}")
        cfg.temp_dir = t
    return cfg


def workspace_tag(ws: Path) -> str:
    return hashlib.sha256(str(Path(ws).resolve()).encode()).hexdigest()[:8]
