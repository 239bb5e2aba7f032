"""Every app binary starts: `python -m apps.<name> --helpfull` prints its flags (absl then exits
with status 1) and raises nothing, so a flag defined twice, or any other import-time error,
cannot land again."""

import contextlib
import io
import multiprocessing
import pathlib
import runpy
import sys

import pytest

APPS = pathlib.Path(__file__).resolve().parents[1] / "apps"
BINARIES = sorted(p.stem for p in APPS.glob("*.py") if "app.run(" in p.read_text())


def _help(name, queue):
    """In a forked child: run apps.<name> as __main__ with --helpfull; report (exit code, output)."""
    from absl import flags

    for flag in list(flags.FLAGS):  # flags the parent process defined (other tests) are defined anew
        if flags.FLAGS.find_module_defining_flag(flag, "").startswith("apps."):
            delattr(flags.FLAGS, flag)
    out = io.StringIO()
    sys.argv = [f"apps.{name}", "--helpfull"]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(f"apps.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code or 0
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        code, out = "raised", io.StringIO(f"{type(e).__name__}: {e}")
    text = out.getvalue()
    listed = "--output_dir" in text  # a flag every binary defines
    queue.put((code, listed, text[-800:]))


@pytest.mark.skipif(sys.platform != "linux", reason="forks a child per binary (Linux)")
def test_every_binary_prints_its_help():
    import tensorflow  # noqa: F401  (imported once, before the forks)

    import apps.experiment  # noqa: F401

    assert len(BINARIES) >= 20
    context = multiprocessing.get_context("fork")
    failures = {}
    for name in BINARIES:
        queue = context.Queue()
        child = context.Process(target=_help, args=(name, queue))
        child.start()
        code, listed, output = queue.get(timeout=120)
        child.join(30)
        if code not in (0, 1) or not listed or "Traceback" in output:
            failures[name] = output
    assert not failures, failures
