"""A config naming a model outside the package (``examples.infogan.InfoGAN``) that does not import: the one-line error
names the module, why it did not import, and the fix, instead of listing the package's models."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INFOGAN = REPO / "configs" / "examples" / "infogan.yaml"


def fit(*args: str, cwd: Path) -> str:
    """``python -m gan_lightning fit ARGS`` run as a user runs it; the error line (the run must fail in one line)."""
    proc = subprocess.run([sys.executable, "-m", "gan_lightning", "fit", *args], cwd=cwd, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("gan_lightning: config error:")]
    assert "unknown class" not in line and "gan_lightning.models.BiGAN" not in line, line  # not the package's list
    return line


def misspelled(tmp_path: Path, old: str, new: str) -> Path:
    config = tmp_path / "infogan.yaml"
    text, count = re.subn(rf"class_path: {re.escape(old)}(?=\s)", f"class_path: {new}", INFOGAN.read_text())
    assert count == 1
    config.write_text(text)
    return config


def test_run_outside_the_repository_names_the_missing_module_and_where_to_run_from(tmp_path):
    line = fit("--config", str(INFOGAN), cwd=tmp_path)  # Python looks in tmp_path, which has no examples/
    assert "model: cannot import 'examples.infogan.InfoGAN'" in line, line
    assert "No module named 'examples'" in line, line
    assert "run from the folder that holds examples/, or add that folder to PYTHONPATH" in line, line


def test_a_misspelled_class_names_the_module_and_the_classes_it_has(tmp_path):
    config = misspelled(tmp_path, "examples.infogan.InfoGAN", "examples.infogan.InfoGAM")
    line = fit("--config", str(config), cwd=REPO)
    assert "model: module 'examples.infogan' has no class 'InfoGAM'" in line, line
    assert "did you mean 'examples.infogan.InfoGAN'?" in line and "it has: InfoGAN" in line, line
    assert "CodeGrid" not in line, line  # a callback, not a model


def test_a_misspelled_callback_class_lists_the_modules_callbacks(tmp_path):
    config = misspelled(tmp_path, "examples.infogan.CodeGrid", "examples.infogan.CodeGrd")
    line = fit("--config", str(config), cwd=REPO)
    assert "trainer.callbacks: module 'examples.infogan' has no class 'CodeGrd'" in line, line
    assert "did you mean 'examples.infogan.CodeGrid'?" in line and "it has: CodeGrid" in line, line


def test_a_misspelled_module_names_the_package_found_and_the_modules_it_holds(tmp_path):
    config = misspelled(tmp_path, "examples.infogan.InfoGAN", "examples.infogann.InfoGAN")
    line = fit("--config", str(config), cwd=REPO)
    assert "cannot import 'examples.infogann.InfoGAN': No module named 'examples.infogann'" in line, line
    assert f"package 'examples' is {REPO / 'examples'}, which holds: infogan" in line, line
    assert "did you mean 'examples.infogan'?" in line, line


@pytest.mark.parametrize("body,cause,fix", [
    ("import not_a_real_package_xyz\n", "No module named 'not_a_real_package_xyz'",
     "install 'not_a_real_package_xyz' or fix that import in 'brokenpkg.model'"),
    ("from torch import not_a_real_name_xyz\n", "cannot import name 'not_a_real_name_xyz' from 'torch'", ""),
])
def test_a_module_whose_own_import_fails_is_named_with_the_error_it_raised(body, cause, fix, tmp_path):
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("")
    (tmp_path / "brokenpkg" / "model.py").write_text(body + "class Net: ...\n")
    line = fit("--config", str(REPO / "configs" / "bigan.yaml"), "--model.class_path", "brokenpkg.model.Net",
               cwd=tmp_path)
    assert "model: module 'brokenpkg.model' failed to import: " + cause in line, line
    assert fix in line, line
