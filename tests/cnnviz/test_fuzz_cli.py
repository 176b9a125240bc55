"""Out-of-range option values on every CLI command (negative, zero, huge, NaN, infinite,
unknown names): each run ends with a result, or exit status 1 and one ``cnnviz: error:``
line (argparse's usage error, status 2, for values of the wrong kind); never a traceback or
onnxruntime's own logging."""

from __future__ import annotations

import fuzzing
import numpy as np
import pytest
from conftest import make_graph_model
from onnx import helper

from cnnviz.cli import main
from cnnviz.cli.common import one_line

#: one seeded case per command a test run (benchmarks/fuzz.py runs 1,000+)
CASES = len(fuzzing.COMMANDS)


@pytest.fixture(scope="module")
def runner():
    with fuzzing.Runner(timeout=120.0) as running:
        yield running


@pytest.fixture(scope="module")
def command_lines() -> list[fuzzing.Case]:
    return fuzzing.cli_cases(seed=19, count=CASES)


@pytest.mark.parametrize("index", range(CASES))
def test_bad_option_value_gives_a_result_or_one_error_line(runner, command_lines, index):
    case = command_lines[index]
    outcome = runner.run(case)
    assert outcome.verdict in ("ok", "clean"), f"{case.mutation}: {outcome.detail}"


def test_every_command_is_fuzzed():
    from cnnviz.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) - {"demo"} <= set(fuzzing.COMMANDS)  # demo takes --seed and --out only


@pytest.mark.parametrize("seed", ["-1", "18446744073709551616", "nan"])
def test_seed_out_of_range_is_a_usage_error(capsys, seed):
    with pytest.raises(SystemExit) as exit_:
        main(["texture", "nothing.png", "--seed", seed, "--out", "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--seed" in err.splitlines()[-1]


def test_onnxruntime_failure_is_one_line_without_its_logging(capfd, tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], "reshape")]
    shape = {"shape": np.array([-1, 5], np.int64)}
    path = tmp_path / "broken.onnx"
    path.write_bytes(make_graph_model(nodes, shape, ["N", 3, 4, 4], "y").SerializeToString())
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
    code = main(["predict", str(path), str(image)])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and ":onnxruntime:" not in err
    assert lines[-1].startswith("cnnviz: error: onnxruntime cannot run model")
    assert sum(line.startswith("cnnviz: error:") for line in lines) == 1


def test_one_line_joins_lines_and_escapes_control_characters():
    assert one_line("first\n  second\r\n\nthird") == "first second third"
    assert one_line("bell\x07 and\ttab") == "bell\\x07 and\\ttab"
