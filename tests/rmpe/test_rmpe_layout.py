"""The package layout's import rules: the pipeline loads the run-time NMS, never the parameter search (nor
the evaluator), and the old flat module paths are gone (no shims)."""
import importlib
import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set:
    """The rmpe modules loaded by ``statement`` in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(m for m in sys.modules if m.startswith('rmpe'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return set(out.stdout.split())


def test_pipeline_imports_runtime_nms_not_the_search():
    loaded = _modules_after("import rmpe.pipeline")
    assert "rmpe.nms.runtime" in loaded  # the pipeline does run NMS (so the check below means something)
    assert "rmpe.nms.search" not in loaded
    assert "rmpe.evaluate" not in loaded


def test_nms_package_does_not_import_the_search():
    loaded = _modules_after("import rmpe.nms")
    assert {"rmpe.nms.params", "rmpe.nms.runtime"} <= loaded
    assert "rmpe.nms.search" not in loaded
    assert "rmpe.nms.search" in _modules_after("import rmpe.nms.search")


@pytest.mark.parametrize("old", ["rmpe.nms_search", "rmpe.nms_params", "rmpe.eval", "rmpe.train", "rmpe.hourglass",
                                 "rmpe.datasets", "rmpe.augment"])
def test_old_flat_modules_are_gone(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_package_reexports():
    import rmpe.nms
    import rmpe.nms.params
    import rmpe.nms.runtime
    from rmpe.pgpg import PGPG, load_default
    from rmpe.pgpg.model import PGPG as PGPG2, load_default as load_default2
    from rmpe.sstn import SSTN
    from rmpe.sstn.model import SSTN as SSTN2

    assert PGPG is PGPG2 and load_default is load_default2 and SSTN is SSTN2
    for name in rmpe.nms.__all__:
        assert getattr(rmpe.nms, name) is getattr(rmpe.nms.params, name, None) or \
            getattr(rmpe.nms, name) is getattr(rmpe.nms.runtime, name)
    assert "tune_nms" not in rmpe.nms.__all__ and not hasattr(rmpe.nms, "tune_nms")
