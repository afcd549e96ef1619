"""`hw3 reproduce`: a suite's runs, a report that matches MLflow, and resuming where it stopped."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from runner import hookimpl
from runner.commands.cli import app
from runner.commands.reproduce import reproduce
from runner.errors import RunInterrupted
from runner.record import SUITE as SUITE_TAG
from runner.record import SUITE_ITEM as ITEM_TAG
from runner.runs.placement import cores, threads_per_run
from runner.runs.plugins import registered

SUITE = """
[suites.tiny]
description = "a small suite for tests"
runs = [
    { method = "gan", dataset = "mnist", set = { quality_samples = 200, grid = 16 } },
    { method = "baseline", pair = "mnist:mnistm" },
    { method = "baseline", pair = "mnist:mnistm", set = { train_on = "target" } },
]
"""
GAN = "gan mnist grid=16 quality_samples=200"  # an item's key: method, where, its own settings
SETTINGS = [("epochs", 2), ("train_subset", 256), ("test_subset", 300), ("tsne_points", 100), ("log_every", 4)]


@pytest.fixture
def tiny_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "registry.toml"
    user.write_text(SUITE)
    monkeypatch.setenv("HW3_REGISTRY", str(user))


class InterruptFirstBaseline:
    """Ctrl-C after the first epoch of the first baseline run, once."""

    def __init__(self) -> None:
        self.fired = False

    @hookimpl
    def hw3_epoch_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        if not self.fired and run.resolved.method == "baseline":
            self.fired = True
            os.kill(os.getpid(), signal.SIGINT)


def suite_runs(client: Any) -> list[Any]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string=f"tags.`{SUITE_TAG}` = 'tiny'")


def test_an_interrupted_suite_resumes_and_its_report_matches_mlflow(client, tiny_suite, tmp_path: Path) -> None:
    out = tmp_path / "report"
    with registered(InterruptFirstBaseline(), name="interrupt"), pytest.raises(RunInterrupted):
        reproduce("tiny", overrides=SETTINGS, out=out)
    first = {r.data.tags[ITEM_TAG]: r for r in suite_runs(client)}
    assert first[GAN].info.status == "FINISHED"
    assert first["baseline mnist:mnistm"].info.status == "KILLED"
    assert "baseline mnist:mnistm train_on=target" not in first

    page, outcomes = reproduce("tiny", overrides=SETTINGS, out=out)
    assert [o.status for o in outcomes] == ["reused", "FINISHED", "FINISHED"]
    runs = {r.data.tags[ITEM_TAG]: r for r in suite_runs(client)}
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs.values())
    # The gan run was reused and the killed baseline resumed in place: the same run IDs.
    assert runs[GAN].info.run_id == first[GAN].info.run_id
    assert runs["baseline mnist:mnistm"].info.run_id == first["baseline mnist:mnistm"].info.run_id

    md = (out / "report.md").read_text()
    for run in runs.values():
        assert run.info.run_id in md
    source = runs["baseline mnist:mnistm"].data.metrics["target_acc"]
    target = runs["baseline mnist:mnistm train_on=target"].data.metrics["target_acc"]
    assert re.search(rf"\| source only \| {100 * source:.2f} \(1 run\) \|", md)
    assert re.search(rf"\| target only \| {100 * target:.2f} \(1 run\) \|", md)
    fd = runs[GAN].data.metrics["quality/fd"]
    assert f"| {fd:.2f} |" in md
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out / image).is_file(), image
    assert "gan-mnist_samples.png" in md and "mnist-mnistm_source-only_tsne_class.png" in md
    page_text = page.read_text()
    assert page.name == "report.html" and "<table>" in page_text and 'src="gan-mnist_samples.png"' in page_text


def test_suite_errors_are_one_line_and_start_no_run(client, tiny_suite) -> None:
    before = len(suite_runs(client))
    r = CliRunner().invoke(app, ["reproduce", "tinny"])
    assert r.exit_code == 1 and "no suite 'tinny'" in r.output and "tiny" in r.output
    r = CliRunner().invoke(app, ["reproduce", "tiny", "--set", "epoch=2"])
    assert r.exit_code == 1 and f"suite 'tiny', run '{GAN}'" in r.output and "epochs" in r.output
    assert len(suite_runs(client)) == before
    assert "Traceback" not in r.output


def test_list_shows_the_suites() -> None:
    r = CliRunner().invoke(app, ["list"])
    assert r.exit_code == 0 and "hw3 reproduce SUITE" in r.output and "report" in r.output


def test_a_suites_seeds_repeat_each_run_that_names_no_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.commands.reproduce import load_suite
    from runner.errors import ConfigError

    user = tmp_path / "registry.toml"
    user.write_text(
        '[suites.seeded]\nseeds = [0, 1, 2]\nruns = [\n  { method = "dann", pair = "mnist:mnistm" },\n'
        '  { method = "gan", dataset = "mnist", set = { seed = 7 } },\n]\n'
        '[suites.bad]\nseeds = "0,1"\nruns = [ { method = "dann" } ]\n'
    )
    monkeypatch.setenv("HW3_REGISTRY", str(user))
    _, items = load_suite("seeded")
    assert [it.key for it in items] == [
        "dann mnist:mnistm seed=0",
        "dann mnist:mnistm seed=1",
        "dann mnist:mnistm seed=2",
        "gan mnist seed=7",
    ]
    with pytest.raises(ConfigError, match=r"\[suites.bad\] seeds must be a list"):
        load_suite("bad")


PAIR_SUITE = """
[suites.pair]
runs = [
    { method = "baseline", pair = "mnist:mnistm" },
    { method = "baseline", pair = "mnist:mnistm", set = { train_on = "target" } },
]
"""


def test_workers_2_resume_a_killed_run_and_make_the_rest_side_by_side(
    client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "registry.toml"
    user.write_text(PAIR_SUITE)
    monkeypatch.setenv("HW3_REGISTRY", str(user))
    out = tmp_path / "report"
    # As the command line gives them (text): the suite's settings hash is of these values.
    settings = [
        ("epochs", "2"),
        ("train_subset", "128"),
        ("test_subset", "100"),
        ("tsne_points", "0"),
        ("log_every", "2"),
    ]

    def runs() -> dict[str, Any]:
        ids = [e.experiment_id for e in client.search_experiments()]
        return {r.data.tags[ITEM_TAG]: r for r in client.search_runs(ids, filter_string=f"tags.`{SUITE_TAG}` = 'pair'")}

    with registered(InterruptFirstBaseline(), name="interrupt"), pytest.raises(RunInterrupted):
        reproduce("pair", overrides=settings, out=out)  # one after another, as by default
    killed = runs()["baseline mnist:mnistm"]
    assert killed.info.status == "KILLED" and len(runs()) == 1

    # The killed run resumes (a request with resume=, which takes no `threads` setting) and the
    # missing one starts, in two processes at once; the outcomes come in the suite's order.
    page, outcomes = reproduce("pair", overrides=settings, out=out, workers=2)
    assert [(o.item.key, o.status) for o in outcomes] == [
        ("baseline mnist:mnistm", "FINISHED"),
        ("baseline mnist:mnistm train_on=target", "FINISHED"),
    ]
    found = runs()
    assert len(found) == 2 and all(r.info.status == "FINISHED" for r in found.values())
    assert found["baseline mnist:mnistm"].info.run_id == killed.info.run_id  # resumed in place
    assert found["baseline mnist:mnistm train_on=target"].data.params["threads"] == str(threads_per_run(2, cores()))

    # Run again from the command line: both are found finished, and the report is the same.
    md = (out / "report.md").read_text()
    r = CliRunner().invoke(app, ["reproduce", "pair", "--workers", "2", "--out", str(out),
                                 *(f"--set={k}={v}" for k, v in settings)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.count("finished earlier") == 2 and "at a time" not in r.output, r.output
    again = (out / "report.md").read_text().replace("| reused |", "| FINISHED |")  # each run's status this time
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"  # and when it was written
    assert re.sub(stamp, "", again) == re.sub(stamp, "", md) and page.is_file()
    for run in found.values():
        assert run.info.run_id in md
    source = found["baseline mnist:mnistm"].data.metrics["target_acc"]
    target = found["baseline mnist:mnistm train_on=target"].data.metrics["target_acc"]
    assert re.search(rf"\| source only \| {100 * source:.2f} \(1 run\) \|", md)
    assert re.search(rf"\| target only \| {100 * target:.2f} \(1 run\) \|", md)


@pytest.mark.parametrize(("value", "expected"), [("abc", "--workers 'abc': write a whole number"), ("0", "at least 1")])
def test_bad_workers_are_one_line_and_start_no_run(client, tiny_suite, value: str, expected: str) -> None:
    before = len(suite_runs(client))
    r = CliRunner().invoke(app, ["reproduce", "tiny", "--workers", value])
    assert r.exit_code == 1 and expected in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert len(suite_runs(client)) == before


def test_the_settings_digest_is_the_same_from_python_and_from_the_command_line() -> None:
    from runner.commands.reproduce import settings_hash

    assert settings_hash(None, [("epochs", 2), ("lr", 0.001)], None) == settings_hash(
        None, [("lr", "0.001"), ("epochs", "2")], None
    )
    assert settings_hash(None, [("epochs", 2)], None) != settings_hash(None, [("epochs", 3)], None)


SHARED_SUITE = """
[suites.shared]
runs = [
    { method = "baseline", pair = "mnist:mnistm" },
    { method = "baseline", pair = "mnist:mnistm", set = { train_on = "target" } },
]
"""
TINY_RUN = [("epochs", 1), ("train_subset", 128), ("test_subset", 100), ("tsne_points", 0)]


def test_processes_sharing_a_store_share_a_suite_and_a_late_duplicate_stands_down(
    client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `hw3 reproduce` on two machines, one MLflow store: a run the other is making is not
    started again, and of two runs of one item started at once the later stands down."""
    import io
    import time

    from rich.console import Console

    from runner import record
    from runner.commands.reproduce import settings_hash
    from runner.errors import MadeElsewhere
    from runner.runs.execute import execute
    from runner.runs.plan import RunRequest

    (tmp_path / "registry.toml").write_text(SHARED_SUITE)
    monkeypatch.setenv("HW3_REGISTRY", str(tmp_path / "registry.toml"))
    digest = settings_hash(None, TINY_RUN, None)
    source_only = "baseline mnist:mnistm"
    elsewhere = client.create_experiment("another machine's")

    def other_run(key: str, start_time: int) -> str:
        tags = {SUITE_TAG: "shared", ITEM_TAG: key, record.SUITE_SETTINGS: digest, record.PROCESS: "7@elsewhere:1"}
        return client.create_run(elsewhere, start_time=start_time, tags=tags).info.run_id

    # Another process is making the source-only run: this one makes only the target-only run.
    theirs = other_run(source_only, int(time.time() * 1000) - 60_000)
    out = io.StringIO()
    page, outcomes = reproduce("shared", None, TINY_RUN, console=Console(file=out, width=200))
    by_key = {o.item.key: o for o in outcomes}
    assert by_key[source_only].status == "elsewhere" and by_key[source_only].run_id == theirs
    assert by_key[source_only].note == "7@elsewhere:1"
    assert by_key["baseline mnist:mnistm train_on=target"].status == "FINISHED"
    assert f"run {theirs} is being made by 7@elsewhere:1, not started again" in out.getvalue()
    assert "still being made elsewhere" in out.getvalue() and "| elsewhere |" in page.with_suffix(".md").read_text()

    # Both started it at once (each planned before the other's run existed): the later run stands
    # down as soon as it exists, and is deleted; the earlier one goes on.
    item = record.SuiteItem("shared", source_only, digest)
    req = RunRequest("baseline", pair="mnist:mnistm", overrides=list(TINY_RUN), suite=item)
    with pytest.raises(MadeElsewhere, match=f"run {theirs} makes it"):
        execute(req, Console(file=io.StringIO()))
    live = [r for r in suite_runs_of(client, "shared") if r.data.tags[ITEM_TAG] == source_only]
    assert [r.info.run_id for r in live] == [theirs]
    # The other started later: this one goes on, and the other would stand down when it looks.
    client.delete_run(theirs)
    later = other_run(source_only, int(time.time() * 1000) + 60_000)
    mine = execute(req, Console(file=io.StringIO()))
    assert mine.status == "FINISHED" and client.get_run(later).info.status == "RUNNING"


def suite_runs_of(client: Any, suite: str) -> list[Any]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string=f"tags.`{SUITE_TAG}` = '{suite}'")
