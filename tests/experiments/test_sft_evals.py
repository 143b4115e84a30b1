"""experiments/smollm2_study/sft_evals.py: the CPU kind read from the flags, and the stored
evaluations it names are committed jobs with an SFT evaluation for each protocol."""

from __future__ import annotations

import re

import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("experiments/smollm2_study/sft_evals.py")


def test_cpu_kind_from_flags(script, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Intel(R) Xeon(R)\nflags\t\t: avx512f amx_bf16 avx512_bf16\n")
    assert script.cpu_kind(info) == "intel-amx"
    info.write_text("model name\t: AMD EPYC\nflags\t\t: avx512f avx512_bf16\n")
    assert script.cpu_kind(info) == "amd-epyc"
    assert script.cpu_kind(tmp_path / "missing") == "amd-epyc"


def test_every_kind_names_a_committed_evaluation(script):
    for kind, protocols in script.SFT_EVALS.items():
        assert set(protocols) == set(script.SFT_KEYS), kind
        for protocol, (source, digest) in protocols.items():
            metrics, hits = script.sft_results(script.HERE / source)
            assert {"test/hr@1", "test/gen_hr@1", "test/valid_ratio"} <= set(metrics)
            assert [h.name for h in hits] == ["test_hits.json"]
            assert re.fullmatch(r"[0-9a-f]{64}", digest), (kind, protocol)
    digests = [d for protocols in script.SFT_EVALS.values() for _, d in protocols.values()]
    assert len(set(digests)) == len(digests)  # the kinds' models differ


def test_a_job_without_sft_evaluation_stops(script, tmp_path):
    (tmp_path / "results.json").write_text('{"test/hr@1": 0.5}')
    with pytest.raises(SystemExit, match="no SFT evaluation"):
        script.sft_results(tmp_path)
