"""Lets lm-eval's own command line find m2bench's adapter: ``lm_eval --model m2bench ...``.

lm-eval 0.4 has no plugin hook for models, so ``scripts/bootstrap.sh`` puts a one-line
``m2bench-lm-eval.pth`` (``import _m2bench_lm_eval_hook``) into the environment's site-packages.
At interpreter start this module only adds an import watcher (no lm-eval or torch import): once
lm-eval has filled its model table (``lm_eval.models``), the watcher registers ``m2bench`` there as
a lazy entry, ``m2bench.adapters.lm_eval:M2BenchLM``, imported only when a run asks for it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_WATCHED = "lm_eval.models"
_TARGET = "m2bench.adapters.lm_eval:M2BenchLM"


class _Watcher(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name != _WATCHED:
            return None
        sys.meta_path.remove(self)  # find the real module, then wrap its loading
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            run(module)
            try:
                from lm_eval.api.registry import model_registry

                if "m2bench" not in model_registry:
                    model_registry.register("m2bench", target=_TARGET)
            except Exception:  # an lm-eval without this registry: the adapter says so when used
                pass

        spec.loader.exec_module = exec_module
        return spec


if not any(isinstance(f, _Watcher) for f in sys.meta_path):
    sys.meta_path.insert(0, _Watcher())
