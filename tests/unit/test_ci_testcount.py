""".ci/testcount.py, which makes a CI pytest run that proves too little fail: it reads real
JUnit reports of small pytest runs made here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "testcount.py"
SUITE = '''
import pytest

def test_one():
    assert True

def test_two():
    assert True

@pytest.mark.parametrize("n", [1, 2])
def test_device(n):
    pytest.skip("no Vulkan0 device here")
'''


@pytest.fixture(scope="module")
def testcount():
    spec = importlib.util.spec_from_file_location("testcount", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["testcount"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def junit(tmp_path, source: str) -> str:
    (tmp_path / "tests" / "gpu").mkdir(parents=True)
    (tmp_path / "tests" / "gpu" / "test_suite.py").write_text(source)
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    "--rootdir", str(tmp_path), "tests"], cwd=tmp_path, capture_output=True, timeout=120)
    return str(report)


def run(testcount, capsys, *args):
    status = testcount.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_counts_ran_and_skipped(testcount, tmp_path):
    counts = testcount.read(junit(tmp_path, SUITE))
    assert counts.ran == 2
    assert sorted(counts.skipped) == ["tests.gpu.test_suite::test_device[1]", "tests.gpu.test_suite::test_device[2]"]
    assert set(counts.skipped.values()) == {"no Vulkan0 device here"}


def test_a_run_at_the_floor_passes(testcount, tmp_path, capsys):
    status, out = run(testcount, capsys, junit(tmp_path, SUITE), "--min", "2")
    assert status == 0 and "2 tests ran (floor 2), 2 skipped" in out


def test_fewer_than_the_floor_fails(testcount, tmp_path, capsys):
    status, out = run(testcount, capsys, junit(tmp_path, SUITE), "--min", "3")
    assert status == 1
    assert out.strip().splitlines() == ["ci: only 2 tests ran (the floor is 3); 2 skipped"]


def test_an_empty_run_fails_even_with_floor_zero(testcount, tmp_path, capsys):
    status, out = run(testcount, capsys, junit(tmp_path, "def helper():\n    pass\n"), "--min", "0")
    assert status == 1 and "only 0 tests ran" in out


def test_a_skipped_must_run_test_fails_naming_it(testcount, tmp_path, capsys):
    report = junit(tmp_path, SUITE)
    status, out = run(testcount, capsys, report, "--min", "1", "--must-run", "tests/gpu/test_suite.py::test_device")
    assert status == 1
    assert out.strip().splitlines() == [
        "ci: tests.gpu.test_suite::test_device[1] must run in CI but was skipped: no Vulkan0 device here",
        "ci: tests.gpu.test_suite::test_device[2] must run in CI but was skipped: no Vulkan0 device here"]
    status, _ = run(testcount, capsys, report, "--min", "1", "--must-run", "tests/gpu/test_suite.py::test_one")
    assert status == 0


def test_a_missing_report_is_one_line(testcount, tmp_path, capsys):
    status, out = run(testcount, capsys, str(tmp_path / "none.xml"), "--min", "1")
    assert status == 1 and len(out.strip().splitlines()) == 1 and "cannot read the test report" in out
