"""The pipeline benchmark tool runs and reports every stage (tiny sizes: a smoke test)."""

from pointmap_ros.tools.bench_pipeline import STAGES, bench, main


def test_bench_reports_all_stages():
    res = bench(48, 64, frames=2, warmup=1)
    assert set(res) == set(STAGES)
    assert all(med >= 0 and mean >= 0 for med, mean in res.values())
    assert res['pipeline'][0] >= res['geometry'][0]


def test_bench_cli_prints_one_line_per_size(capsys):
    assert main(['--sizes', '48x64', '40x40', '--frames', '2']) == 0
    out = capsys.readouterr().out
    assert '48x64 noise 0' in out and '40x40 noise 0' in out and 'pipeline_cpu' in out


def test_bench_times_the_correspondence_stage_in_two_map_mode():
    res = bench(48, 64, frames=2, warmup=1, two_map=True)
    assert res['correspondence'][0] > 0
    assert res['pipeline'][0] >= res['correspondence'][0]
