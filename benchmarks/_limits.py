"""The daemon's limits as tenants_bench sees them: found in datamgr.config at run time (a limit another change
adds is used once it exists, and never passed before), and the memory they allow the hostile app to take."""

from __future__ import annotations

import os
from typing import Any

from _hostile import MiB, Plan

KV_MAX_VALUE = 4 * MiB  # datamgr.kv's MAX_VALUE_LENGTH (OpenHarmony's), not a setting
COPIES = (
    4  # of a written value in the daemon at once: received, decoded, bound to SQLite, sent to subscribers
)
SQLITE_CACHE = 2 * MiB  # SQLite's default cache_size (-2000 KiB) per connection; the daemon keeps the default
PROMPT_BYTES_PER_CHAR = 16  # the text, its UTF-8 copy in the request and its token list, roughly


def env_name(dotted: str) -> str:
    return "DATAMGR_" + dotted.upper().replace(".", "__")


def _walk(model: Any, prefix: str = "") -> dict[str, Any]:
    """dotted name -> value (or default, for a class) of every leaf setting."""
    from pydantic import BaseModel

    out: dict[str, Any] = {}
    cls: Any = model if isinstance(model, type) else type(model)
    for name, field in cls.model_fields.items():
        value = field.default if isinstance(model, type) else getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(_walk(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


class Limits:
    """Settings by dotted name (`kv.subscriber_bytes`): the defaults, then what the daemon runs with."""

    def __init__(self) -> None:
        from datamgr.config import Settings

        self.values = _walk(Settings)

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def find(self, *words: str, suffix: str = "_bytes") -> str | None:
        """The first setting whose name holds one of `words` and ends with `suffix`."""
        return next((n for n in self.values if n.endswith(suffix) and any(w in n for w in words)), None)

    def bench_env(self, quota_bytes: int | None) -> dict[str, str]:
        """Settings the bench passes: a per-app storage quota, if asked for and the daemon has one."""
        if quota_bytes is not None and self.has("storage.app_quota_bytes"):
            return {env_name("storage.app_quota_bytes"): str(quota_bytes)}
        return {}

    def load(self, env: dict[str, str]) -> None:
        """The values the daemon will run with: the defaults under `env` (as harness.Daemon passes it)."""
        from datamgr.config import load_settings

        saved = dict(os.environ)
        try:
            for k in [k for k in os.environ if k.startswith("DATAMGR_")]:
                del os.environ[k]
            os.environ.update(env)
            self.values = _walk(load_settings())
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def memory_allowance(
        self, idle_peak: int, plan: Plan, counts: dict[str, dict[str, dict[str, int]]]
    ) -> tuple[int, list[tuple[str, int]]]:
        """The daemon's peak RSS the settings allow under the attacks that ran: the idle phase's peak plus
        what each attack may hold by the limits (terms: text, bytes)."""
        terms: list[tuple[str, int]] = []
        subs = counts.get("subscribers", {})
        opened = {k.split()[0]: v.get("ok", 0) for k, v in subs.items() if k.endswith("never read")}
        for svc, change in (("datashare", self.get("datashare.max_call_bytes", MiB)), ("kv", KV_MAX_VALUE)):
            n = opened.get("DataShare" if svc == "datashare" else "KV", 0)
            if not n:
                continue
            per, app = self.get(f"{svc}.subscriber_bytes"), self.get(f"{svc}.app_subscriber_bytes")
            if per is not None:
                held = min(n * per, app) if app is not None else n * per
                how = f"{svc}.subscriber_bytes {per / MiB:.0f} MiB" + (
                    f", app_subscriber_bytes {app / MiB:.0f} MiB" if app is not None else ""
                )
            else:
                queue = self.get(f"{svc}.subscriber_queue", 10_000)
                held, how = n * queue * change, f"no byte cap: {svc}.subscriber_queue {queue} x a change"
            terms.append(
                (
                    f"{n} {svc} subscribers never reading ({how}; + one change each in flight)",
                    held + n * change,
                )
            )
        if "preauth" in counts and self.has("max_message_bytes"):
            # every other method refuses an unknown caller unread; the open ones (health, reflection) read
            # its messages one at a time, each up to the server's one-message limit (grpc refuses a larger
            # one by its length), and grpc's reading of a message peaks at about 4x its size
            size = min(self.get("max_message_bytes"), plan.preauth_bytes)
            terms.append(
                (
                    "one unauthenticated open-method message at a time, ~4x for grpc's reading "
                    "(max_message_bytes)",
                    4 * size,
                )
            )
        elif "preauth" in counts:
            known = "open_max_message_bytes"  # what a caller without a known token may send
            limit_name = known if self.has(known) else self.find("unauth", "preauth", "pre_auth")
            if limit_name is not None:
                size, how = self.get(limit_name), limit_name
            else:
                size = self.get("datashare.max_batch_bytes", 128 * MiB) + MiB
                how = "no pre-auth limit: the largest message, datashare.max_batch_bytes + 1 MiB"
            size = min(size, plan.preauth_bytes)
            terms.append(
                (
                    f"{plan.preauth_threads} unauthenticated messages in flight, twice ({how})",
                    2 * plan.preauth_threads * size,
                )
            )
        if "flood" in counts:
            call = self.get("datashare.max_call_bytes", MiB)
            terms.append(
                (
                    f"3 flood calls in flight, {COPIES} copies each (1 MiB, 1 MiB, datashare.max_call_bytes)",
                    COPIES * (2 * MiB + call),
                )
            )
        if "flood" in counts or "predicates" in counts:
            conns = self.get("read_threads", 4) + 1
            terms.append(
                (f"SQLite's page cache full on {conns} connections (read_threads + 1)", conns * SQLITE_CACHE)
            )
        if "predicates" in counts:
            page = self.get("datashare.max_page_bytes", 2 * MiB)
            terms.append(
                (
                    "2 predicate calls: a query page and a delete's rows (datashare.max_page_bytes)",
                    2 * page + 4 * plan.row_chars,
                )
            )
        if "prompts" in counts:
            n_ctx = self.get("ai.n_ctx", 8192)
            cap = (
                (self.get("ai.max_prompt_chars") or 8 * n_ctx)
                if self.has("ai.max_prompt_chars")
                else 64 * n_ctx
            )
            chars = min(cap, plan.prompt_chars)
            terms.append(
                (
                    f"{plan.prompt_threads} prompts of {chars:,} characters being checked",
                    plan.prompt_threads * chars * PROMPT_BYTES_PER_CHAR,
                )
            )
        return idle_peak + sum(size for _, size in terms), terms
