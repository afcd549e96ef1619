"""The reality check of a tuning study: for each validator, the target test accuracy of the trial
it would choose, beside the oracle's choice (best target validation accuracy), the defaults, and
how well its scores rank the trials (Spearman's rho against target test accuracy).

Read from the trials' MLflow runs (tagged with the study's name, under one parent run or under
the parents of several `hw3 tune` processes sharing the study), so `hw3 report --tune` can build
it again at any time. Each trial's figures are its runs' means over seeds; each validator
is read at the epoch it chose (`selected/<validator>/...`). Pruned trials stopped early, so their
scores are not comparable: they are counted, never chosen.

A study-level validator (`runner.StudyValidator`, such as `ensv`) scores the trials against each
other instead: every finished trial's runs at their last epoch, from the target validation
predictions each run saved (`record.TARGET_VAL_PREDICTIONS`), scored together as one set of
candidates (runs predicting the same images), a trial's score the mean over its runs, and its
accuracy their last epoch's target test accuracy. The per-run `selected/<name>/...` such a
validator logs (its pick among one run's epochs) is not what the table uses.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner import record
from runner.adapt.selection import LAST
from runner.errors import Hw3Error

if TYPE_CHECKING:
    from runner.store import Store
    from runner.validator import StudyValidator, Validator

ORACLE = "oracle"
# A validator whose choice lands this many points or more below the oracle's, below the defaults,
# or whose scores rank the trials against their accuracy, misleads.
MISLEADS_POINTS = 3.0


@dataclass
class TrialRow:
    """One trial: its values, and per validator its mean score and target test accuracy (at the
    epoch that validator chose) over its seeds' runs."""

    number: int
    values: dict[str, str]
    runs: list[str]
    defaults: bool = False
    pruned: bool = False
    score: dict[str, float] = field(default_factory=dict)
    acc: dict[str, float] = field(default_factory=dict)
    last_acc: float | None = None  # target test accuracy at the last epoch, mean over its runs


@dataclass
class Verdict:
    validator: str
    oracle: bool  # reads target labels
    chosen: TrialRow | None
    chosen_acc: float | None
    defaults_acc: float | None
    rho: float | None  # Spearman's rank correlation of score with target test accuracy
    gap: float | None  # chosen_acc - the oracle's choice's accuracy, in points

    def says(self) -> str:
        if self.oracle:
            return "uses target labels: the bound, not a choice a user can make"
        if self.chosen_acc is None:
            return "no finished trial"
        notes = []
        if self.gap is not None and self.gap <= -MISLEADS_POINTS:
            notes.append(f"{-self.gap:.1f} points below the oracle's choice")
        if self.defaults_acc is not None and self.chosen_acc < self.defaults_acc - 1e-9:
            notes.append(f"{100 * (self.defaults_acc - self.chosen_acc):.1f} below the defaults")
        if self.rho is not None and self.rho < 0:
            notes.append("ranks the trials against their accuracy")
        if notes:
            return "misleads: " + "; ".join(notes)
        return "close to the oracle" if self.gap is not None and self.gap > -1.0 else "fair"


@dataclass
class RealityCheck:
    parent_run_id: str
    select: str  # the validator the study searched with
    validators: list[str]  # in the order the table lists them, the oracle last
    trials: list[TrialRow]
    verdicts: list[Verdict]
    oracle_acc: float | None
    best_acc: float | None  # the best target test accuracy of any finished trial, in hindsight
    study_level: list[str] = field(default_factory=list)  # validators that scored the trials together

    @property
    def finished(self) -> list[TrialRow]:
        return [t for t in self.trials if not t.pruned]


def trial_rows(tracker: Store, study: str) -> list[TrialRow]:
    """The study's trials, from their finished runs in this MLflow store, grouped by trial number."""
    runs = tracker.search(f"tags.`{record.STUDY}` = '{study}'", status="FINISHED")
    by_trial: dict[int, list[Any]] = defaultdict(list)
    tags: dict[int, record.TrialTags] = {}
    for run in runs:
        trial = record.TrialTags.from_tags(run.data.tags)
        if trial is not None:
            by_trial[trial.number].append(run)
            tags.setdefault(trial.number, trial)
    rows = []
    for number, group in sorted(by_trial.items()):
        row = TrialRow(
            number,
            dict(tags[number].values),
            [r.info.run_id for r in group],
            defaults=tags[number].defaults,
            pruned=any(record.STOPPED_EARLY in r.data.tags for r in group),
        )
        picked = [record.selection(r) for r in group]
        names = {k.split("/")[1] for sel in picked for k in sel if k.endswith("/score")}
        for name in names:
            scores = [sel[f"selected/{name}/score"] for sel in picked if f"selected/{name}/score" in sel]
            accs = [sel[f"selected/{name}/target_acc"] for sel in picked if f"selected/{name}/target_acc" in sel]
            if len(scores) == len(accs) == len(group):
                row.score[name] = statistics.fmean(scores)
                row.acc[name] = statistics.fmean(accs)
        last = [
            sel.get(f"selected/{LAST}/target_acc", r.data.metrics.get("target_acc"))
            for sel, r in zip(picked, group, strict=True)
        ]
        if all(a is not None for a in last):
            row.last_acc = statistics.fmean(last)
        rows.append(row)
    return rows


def candidate_scores(
    tracker: Store, validator: StudyValidator, runs: dict[int, list[str]], *, skip_unreadable: bool = False
) -> dict[int, float]:
    """Each trial's score by a study-level validator, its candidates the last epoch of every run in
    `runs` (trial number -> its run IDs) that saved target validation predictions: runs predicting
    the same images are scored together, and a trial's score is the mean over its runs. A trial
    none of whose runs saved predictions is left out; with `skip_unreadable`, so is a run this
    MLflow store does not hold (a worker on another machine, its own store)."""
    import torch

    from runner.adapt.selection import decode_predictions
    from runner.errors import Hw3Error
    from runner.validator import Candidate

    by_images: dict[str, list[tuple[int, Candidate]]] = defaultdict(list)
    for number, ids in sorted(runs.items()):
        for run_id in ids:
            try:
                data = tracker.read_bytes(run_id, record.TARGET_VAL_PREDICTIONS)
            except Hw3Error:
                if not skip_unreadable:
                    raise
                continue
            if data is None:
                continue
            p = decode_predictions(data)
            by_images[p.images].append((number, Candidate(torch.from_numpy(p.last()), f"trial {number} run {run_id}")))
    per_trial: dict[int, list[float]] = defaultdict(list)
    for group in by_images.values():
        try:
            scores = validator.score_candidates([c for _, c in group])
        except Exception as exc:  # a plugin's validator: name it
            raise Hw3Error(f"validator '{validator.name}' raised {type(exc).__name__}: {exc}") from exc
        for (number, _), value in zip(group, scores, strict=True):
            per_trial[number].append(float(value))
    return {n: statistics.fmean(v) for n, v in per_trial.items()}


def score_together(tracker: Store, trials: list[TrialRow], validators: dict[str, Validator]) -> list[str]:
    """Replace, in `trials`, each study-level validator's per-run figures by its score of every
    finished trial against the others (its accuracy: the trial's last epoch's); returns their names."""
    from runner.validator import is_study_level

    study = {name: v for name, v in validators.items() if is_study_level(v)}
    done = {t.number: t for t in trials if not t.pruned}
    for name, validator in study.items():
        for t in trials:
            t.score.pop(name, None)
            t.acc.pop(name, None)
        scores = candidate_scores(tracker, validator, {n: t.runs for n, t in done.items()})
        for number, value in scores.items():
            t = done[number]
            if t.last_acc is not None:
                t.score[name], t.acc[name] = value, t.last_acc
    return list(study)


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def check(
    parent_run_id: str, select: str, trials: list[TrialRow], order: list[str], study_level: list[str] | None = None
) -> RealityCheck:
    """Each validator's choice among the finished trials, against the oracle's; `order` lists the
    validators first in the order given (the registered ones), then any others the runs logged;
    `study_level` names those `score_together` scored."""
    done = [t for t in trials if not t.pruned]
    logged = {name for t in done for name in t.score}
    names = [n for n in order if n in logged] + sorted(logged - set(order))
    names = [n for n in names if n != ORACLE] + ([ORACLE] if ORACLE in logged else [])
    oracle_pick = _best(done, ORACLE)
    oracle_acc = oracle_pick.acc[ORACLE] if oracle_pick else None
    defaults = next((t for t in done if t.defaults), None)
    verdicts = []
    for name in names:
        pick = _best(done, name)
        have = [t for t in done if name in t.score]
        rho = spearman([t.score[name] for t in have], [t.acc[name] for t in have])
        acc = pick.acc[name] if pick else None
        gap = 100 * (acc - oracle_acc) if acc is not None and oracle_acc is not None else None
        d_acc = defaults.acc.get(name) if defaults else None
        verdicts.append(Verdict(name, name == ORACLE, pick, acc, d_acc, rho, gap))
    best = max((max(t.acc.values()) for t in done if t.acc), default=None)
    together = [n for n in names if n in (study_level or [])]
    return RealityCheck(parent_run_id, select, names, trials, verdicts, oracle_acc, best, together)


def _best(trials: list[TrialRow], name: str) -> TrialRow | None:
    scored = [t for t in trials if name in t.score and t.score[name] == t.score[name]]
    return max(scored, key=lambda t: (t.score[name], -t.number)) if scored else None


def build(tracker: Store, parent_run_id: str) -> RealityCheck:
    """The reality check of the tune whose parent run is `parent_run_id`."""
    parent = tracker.find_run(parent_run_id, "--tune")
    if parent.data.tags.get(record.TUNE) != "true":
        raise Hw3Error(
            f"--tune {parent_run_id}: that run is not a hw3 tune's parent run (its trials' runs sit under one)"
        )
    trials = trial_rows(tracker, parent.data.tags.get(record.STUDY, ""))
    if not trials:
        raise Hw3Error(f"--tune {parent_run_id}: no finished trial runs under it yet")
    return check_study(tracker, parent_run_id, parent.data.tags.get(record.SELECT, ""), trials)


def check_study(tracker: Store, parent_run_id: str, select: str, trials: list[TrialRow]) -> RealityCheck:
    """`check` over the registered validators, the study-level ones scoring the trials together."""
    from runner.runs.plugins import get_manager

    validators = {name: reg.obj for name, reg in get_manager().validators().items()}
    together = score_together(tracker, trials, validators)
    return check(parent_run_id, select, trials, list(validators), together)
