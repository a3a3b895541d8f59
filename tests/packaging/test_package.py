"""The installed package is xnorflow.{training, compiler, hw, sim, boards} plus xnorflow.errors."""
import subprocess
import sys
import zipfile


def test_tests_bench_and_docs_do_not_import_as_parts_of_the_package():
    for name in ("tests", "bench", "docs"):
        result = subprocess.run([sys.executable, "-c", f"import xnorflow.{name}"], capture_output=True, text=True,
                                cwd="/", check=False)
        assert result.returncode == 1 and f"No module named 'xnorflow.{name}'" in result.stderr, result.stderr
    result = subprocess.run([sys.executable, "-c", "import xnorflow.hw.spec, xnorflow.errors, xnorflow.compiler.cli"],
                            capture_output=True, text=True, cwd="/", check=False)
    assert result.returncode == 0, result.stderr


def test_the_wheel_holds_only_the_five_folders_and_the_root_modules(tmp_path):
    root = __file__.rsplit("/tests/", 1)[0]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), root], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("xnorflow-*.whl")
    names = [n for n in zipfile.ZipFile(wheel).namelist() if not n.startswith("xnorflow-")]
    tops = {n.split("/")[1] if n.count("/") > 1 else n for n in names}
    assert tops == {"xnorflow/__init__.py", "xnorflow/errors.py", "training", "compiler", "hw", "sim", "boards"}, tops
