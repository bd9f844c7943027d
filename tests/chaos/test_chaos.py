"""Seeded chaos: many task instances through the operators and the trigger, faults all along,
and the invariants checked against the emulator's record (see ``driver``)."""

from __future__ import annotations

from tests.chaos import driver


def _replay(seed: int) -> str:
    return f"CHAOS_SEED={seed} pytest tests/chaos -q   (or: pytest tests/chaos --chaos-seed {seed})"


def test_chaos(chaos_seeds: list[int], chaos_workers: int) -> None:
    results = driver.run_batch(chaos_seeds, workers=min(chaos_workers, len(chaos_seeds)))
    failing = [r for r in results if r.violations]
    assert not failing, f"{len(failing)} scenario(s) broke an invariant:\n" + driver.failure_message(failing, _replay)
