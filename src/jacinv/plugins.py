"""Plug-ins: modules or .py files that register operators, models and regularisers before a config is used."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path


def import_plugins(plugins: list) -> None:
    """Import each plug-in (a module name, or a path to a .py file) so its operators and models get
    registered (and regularisers); a file is executed once per process (as a module named after its resolved path).
    Any error inside a plug-in is reported as one ConfigError naming the file and line."""
    for entry in plugins:
        try:
            if str(entry).endswith(".py"):
                path = Path(entry).resolve()
                name = f"jacinv_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or not path.is_file():
                    raise FileNotFoundError(f"no such file {entry}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            else:
                importlib.import_module(entry)
        except Exception as err:  # noqa: BLE001 -- a plug-in is user code: any error in it is the user's to fix
            raise _config_error(f"config key 'plugins': cannot import {entry!r}: {_where_in(err, entry)}"
                                f"{type(err).__name__}: {err}") from err


def _where_in(err: Exception, entry) -> str:
    """'file F, line L: ' of the innermost traceback frame in the plug-in ``entry`` (or of a SyntaxError)."""
    if isinstance(err, SyntaxError) and err.lineno is not None:
        return f"file {err.filename}, line {err.lineno}: "
    target = str(Path(entry).resolve()) if str(entry).endswith(".py") else None
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if target is None or str(Path(f.filename).resolve()) == target]
    return f"file {frames[-1].filename}, line {frames[-1].lineno}: " if frames else ""


def _config_error(message: str):
    from .schema import ConfigError  # the schema imports this module
    return ConfigError(message)

