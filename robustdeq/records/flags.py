"""Every flag an entry can carry, classified: what a reader should conclude from it.

- ``overestimate``: the robust accuracy is probably too high (an attack was blind, broken or
  not converged, or the model is not what it seems); such an entry is marked and not ranked
  as if its number were sound.
- ``not-comparable``: the number is sound but was measured differently from the protocol (a
  smaller budget, other random draws or coverage); shown apart from the ranked entries.
- ``informational``: worth knowing, already handled by the evaluation (e.g. an inference-time
  loop attacked adaptively, a randomised model attacked with EOT).

``docs/entry.md`` documents each flag; the tests check that the two agree and that each flag
fires on a model built for it.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("overestimate", "not-comparable", "informational")


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str
    meaning: str
    handled_by: str | None = None  # another flag whose presence makes this one informational


FLAGS: dict[str, Flag] = {
    flag.name: flag
    for flag in (
        Flag("zero_gradients", "overestimate", "some input gradient is exactly zero: gradient attacks are blind there"),
        Flag("nonfinite_gradients", "overestimate", "an attack met NaN or infinite input gradients: blind there"),
        Flag("nonfinite_logits", "overestimate", "the model returned NaN or infinite logits on some input"),
        Flag(
            "invalid_adversarial_examples",
            "overestimate",
            "an attack returned examples outside the eps-ball, outside [0, 1] or not finite; they count as not broken",
        ),
        Flag("solver_nonconvergence", "overestimate", "more than 1% of forward solves missed their tolerance"),
        Flag(
            "randomized_model",
            "informational",
            "two forwards on the same inputs differed: EOT attacks and majority votes",
        ),
        Flag("stateful_model", "overestimate", "the outputs depend on more than the input (order, batch, what it saw)"),
        Flag("autoattack_randomized_output", "overestimate", "AutoAttack saw different outputs for the same input"),
        Flag("autoattack_softmax_output", "overestimate", "AutoAttack saw outputs that look like probabilities"),
        Flag("autoattack_zero_gradients", "overestimate", "AutoAttack's APGD met zero gradients"),
        Flag(
            "autoattack_square_beats_whitebox",
            "overestimate",
            "AutoAttack's Square broke what its white-box attacks did not",
        ),
        Flag(
            "autoattack_dynamic_defense",
            "overestimate",
            "AutoAttack saw gradients computed inside the forward pass",
            handled_by="test_time_optimisation",
        ),
        Flag("autoattack_n_classes", "informational", "too few classes for AutoAttack's targeted attacks"),
        Flag("approximate_attack_gradient", "overestimate", "a DEQ was attacked with the phantom gradient only"),
        Flag(
            "more_iterations_stronger",
            "overestimate",
            "twice the attack steps lowered accuracy by more than the margin",
        ),
        Flag("solver_budget_sensitive", "overestimate", "twice the solver iterations moved clean or attacked accuracy"),
        Flag(
            "readout_budget_sensitive",
            "informational",
            "twice a fixed readout budget (LyaDEQ's steps, the entropy loop's rounds) moved clean or attacked accuracy",
        ),
        Flag("transfer_stronger_than_whitebox", "overestimate", "PGD on the explicit twin beat every white-box attack"),
        Flag(
            "square_stronger_than_whitebox", "overestimate", "the black-box Square attack beat every white-box attack"
        ),
        Flag("eps_sweep_not_monotone", "overestimate", "robust accuracy rose with eps"),
        Flag("large_eps_above_chance", "overestimate", "at an eps covering the whole box accuracy stayed above chance"),
        Flag(
            "test_time_optimisation", "informational", "an optimisation loop in the forward pass, attacked adaptively"
        ),
        Flag(
            "reduced_budget",
            "not-comparable",
            "a smaller training budget or test subset than the manifest and protocol",
        ),
        Flag(
            "nonstandard_run",
            "not-comparable",
            "an option that changes random draws or coverage (batch size, eps sweep)",
        ),
    )
}


def kind(name: str, flags: list[str]) -> str:
    """The class of flag ``name`` in an entry carrying ``flags`` (unknown flags count as overestimates)."""
    flag = FLAGS.get(name)
    if flag is None:
        return "overestimate"
    if flag.handled_by is not None and flag.handled_by in flags:
        return "informational"
    return flag.kind


def overestimates(flags: list[str]) -> list[str]:
    """The flags of an entry that say its robust accuracy is probably too high."""
    return [f for f in flags if kind(f, flags) == "overestimate"]


def status(flags: list[str]) -> str:
    """``overestimate`` / ``not-comparable`` / ``informational`` / ``ok``: the most serious class present."""
    kinds = {kind(f, flags) for f in flags}
    return next((k for k in KINDS if k in kinds), "ok")
