"""Self-Forcing mechanics (issue 16): the real score goes through the teacher's own training mask, action
classifier-free guidance changes it only through the actions, the exit step is drawn per block and
every step is trained, the critic learns from a fresh rollout."""
from __future__ import annotations

import pytest
import torch

from streamgen.presets import preset
from streamgen.models.dit import CausalDiT
from streamgen.training import objectives
from streamgen.training.conditioning import drop_actions, frame_timesteps, make_cond, null_actions
from streamgen.training.losses import real_score_x0
from streamgen.training.rollout import sample_exit_indices
from streamgen.training.teacher_record import ode_teacher_kind, read_record, teacher_attention
from streamgen.training.trainer import Trainer

from .helpers import tiny_config


def _spy(model, method: str, log: list, depth: list):
    """Wrap ``model.<method>`` (an instance attribute shadows the class's), logging the mask of each outermost
    call (``forward_teacher_forcing`` runs ``forward`` inside; ``depth`` is shared by a model's spies)."""
    inner = getattr(model, method)

    def wrapped(*args, **kwargs):
        mask = kwargs["mask"] if "mask" in kwargs else args[4]  # forward: mask=...; forward_teacher_forcing: 5th positional
        if not depth:
            log.append((method, None if mask is None else mask.clone()))
        depth.append(method)
        try:
            return inner(*args, **kwargs)
        finally:
            depth.pop()

    setattr(model, method, wrapped)


def _spy_both(model, log: list) -> None:
    depth: list = []
    for method in ("forward", "forward_teacher_forcing"):
        _spy(model, method, log, depth)


@pytest.mark.parametrize("recipe", ["teacher", "ar_teacher"])
def test_real_score_uses_the_teachers_own_training_mask(recipe, tmp_path):
    # Train the teacher one step, logging the mask its training forward got.
    teacher_run = Trainer(tiny_config(recipe, steps=1), tmp_path / "t", progress=False)
    trained: list = []
    net = teacher_run.objective.networks["student"]
    _spy_both(net, trained)
    teacher_run.train()
    assert len(trained) == 1
    record = read_record(tmp_path / "t")
    assert record["recipe"] == recipe and record["action_dropout"] == 0.1
    # Distil from it: the real score's forward must get exactly that mask, through the same entry point.
    sf = Trainer(tiny_config("self_forcing", steps=1, extra=[f"init.teacher={tmp_path / 't'}", "dmd.guidance_scale=3"]),
                 tmp_path / "sf", progress=False)
    scored: list = []
    teacher = sf.objective.networks["teacher"]
    _spy_both(teacher, scored)
    sf.train()
    assert len(scored) == 2  # conditional and unconditional (guidance 3)
    for method, mask in scored:
        assert method == trained[0][0]
        if trained[0][1] is None:
            assert mask is None  # a bidirectional teacher: full attention, as trained
        else:
            assert mask is not None and torch.equal(mask, trained[0][1])
    assert sf.objective.teacher_attention == {"teacher": "bidirectional", "ar_teacher": "teacher_forcing"}[recipe]
    # The ODE stage reads the same record: the teacher's trajectories are generated as it was trained, and a
    # setting that contradicts the record names itself.
    kind = {"teacher": "bidirectional", "ar_teacher": "causal"}[recipe]
    other = {"bidirectional": "causal", "causal": "bidirectional"}[kind]
    assert ode_teacher_kind("auto", tmp_path / "t") == kind == ode_teacher_kind(kind, tmp_path / "t")
    with pytest.raises(ValueError, match=f"ode.teacher_kind='{other}' contradicts teacher .*'{recipe}'"):
        Trainer(tiny_config("ode_init", steps=1, extra=[f"init.teacher={tmp_path / 't'}", f"ode.teacher_kind={other}"]),
                tmp_path / "ode", progress=False)


def test_a_teacher_without_a_record_must_be_named(tmp_path):
    folder = tmp_path / "old"
    from streamgen.checkpoints.io import save_checkpoint

    save_checkpoint(folder, preset("tiny"), CausalDiT(preset("tiny")).state_dict())
    with pytest.raises(ValueError, match="records no teacher training"):
        teacher_attention("auto", folder)
    assert teacher_attention("teacher_forcing", folder) == "teacher_forcing"
    with pytest.raises(ValueError, match="records no training attention"):
        ode_teacher_kind("auto", folder)
    assert ode_teacher_kind("causal", folder) == "causal"


def _world_model(seed=0):
    torch.manual_seed(seed)
    model = CausalDiT(preset("tiny-world")).eval()
    model.wake_outputs(actions=True)
    return model


def _world_batch(model, b=2, frames=4, seed=1):
    c, g = model.config, torch.Generator().manual_seed(seed)
    rows = c.actions.window_frames * c.temporal_upsample
    return {"latents": torch.zeros(b, frames, c.in_channels, c.latent_height, c.latent_width),
            "audio": torch.zeros(b, frames // c.frames_per_block * c.audio_frames_per_block, c.audio.channels),
            "keyboard": (torch.rand(b, frames, rows, len(c.actions.keys), generator=g) > 0.5).float(),
            "mouse": torch.randn(b, frames, rows, len(c.actions.mouse_axes), generator=g)}


def test_action_dropout_replaces_whole_samples_by_the_null_action():
    model = _world_model()
    batch = _world_batch(model, b=64)
    dropped = drop_actions(model.config, batch, 0.5, torch.Generator().manual_seed(0))
    nulled = [bool((dropped["keyboard"][i] == 0).all() and (dropped["mouse"][i] == 0).all()) for i in range(64)]
    kept = [torch.equal(dropped["keyboard"][i], batch["keyboard"][i]) and torch.equal(dropped["mouse"][i], batch["mouse"][i])
            for i in range(64)]
    assert all(n or k for n, k in zip(nulled, kept)) and 16 < sum(nulled) < 48
    assert drop_actions(model.config, batch, 0.0, torch.Generator()) is batch


def test_action_guidance_changes_the_real_score_only_through_the_actions():
    model = _world_model()
    batch = _world_batch(model)
    b, f = batch["latents"].shape[:2]
    g = torch.Generator().manual_seed(2)
    xs = {"latents": torch.randn(batch["latents"].shape, generator=g), "audio": torch.randn(batch["audio"].shape, generator=g)}
    t = frame_timesteps(600.0, b, f, "cpu")
    cond, uncond = make_cond(model, batch), make_cond(model, null_actions(model.config, batch), uncond=True)
    same = make_cond(model, batch, uncond=True)  # the world has no text: dropping it changes nothing
    x_cond = real_score_x0(model, xs, t, cond, cond, 1.0)
    x_uncond = real_score_x0(model, xs, t, uncond, uncond, 1.0)
    for k in xs:
        effect = x_cond[k] - x_uncond[k]  # the action effect
        assert effect.abs().max() > 1e-3, f"{k}: the actions do nothing, the test would prove nothing"
        for scale in (1.0, 2.5, 6.0):
            guided = real_score_x0(model, xs, t, cond, uncond, scale)[k]
            torch.testing.assert_close(guided - x_uncond[k], scale * effect, rtol=1e-5, atol=1e-5)
            # Equal actions in both branches: the guidance has no effect at all.
            torch.testing.assert_close(real_score_x0(model, xs, t, cond, same, scale)[k], x_cond[k], rtol=1e-6, atol=1e-6)


def test_the_objective_guides_by_the_actions(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("self_forcing", steps=1, extra=["model=tiny-world", "dmd.guidance_scale=3"]),
                      tmp_path, progress=False)
    seen = {}

    def spy(xs, teacher, critic, c_real, u_real, c_fake, **kw):
        seen.update(c=c_real.extras["actions"], u=u_real.extras["actions"], scale=kw["scale"])
        return real(xs, teacher, critic, c_real, u_real, c_fake, **kw)

    real = objectives.dmd_generator_loss
    monkeypatch.setattr(objectives, "dmd_generator_loss", spy)
    trainer.train()
    assert seen["scale"] == 3 and seen["c"].keyboard.abs().sum() > 0
    assert (seen["u"].keyboard == 0).all() and (seen["u"].mouse == 0).all()


def test_exit_step_is_drawn_per_block():
    draws = [sample_exit_indices(4, 8, torch.Generator().manual_seed(s)) for s in range(3)]
    assert all(len(set(d)) > 1 for d in draws)  # varies between the blocks of one rollout
    assert draws[0] == sample_exit_indices(4, 8, torch.Generator().manual_seed(0))  # reproducible under a seed
    per_rollout = sample_exit_indices(4, 8, torch.Generator().manual_seed(0), per="rollout")
    assert len(set(per_rollout)) == 1 and len(per_rollout) == 8
    assert sample_exit_indices(4, 3, torch.Generator(), last_step_only=True) == (3, 3, 3)


def test_every_denoising_step_gets_gradient_over_a_few_rollouts(tmp_path):
    trainer = Trainer(tiny_config("self_forcing", steps=4, extra=["dmd.critic_steps=1"]), tmp_path, progress=False)
    student = trainer.objective.networks["student"]
    inner, carried = student.forward_cached, []

    def forward_cached(x, t, *args, **kwargs):
        out = inner(x, t, *args, **kwargs)
        if torch.is_grad_enabled() and x.dim() == 5:
            carried.append(round(float(t.flatten()[0]), 3))
        return out

    student.forward_cached = forward_cached
    per_step = []
    for _ in range(4):
        before = len(carried)
        trainer.train(until=trainer.step + 1)
        per_step.append(carried[before:])
    steps = {round(float(t), 3) for t in trainer.timesteps}
    assert set(carried) == steps, f"steps that carried a gradient: {sorted(set(carried))} of {sorted(steps)}"
    assert any(len(set(s)) > 1 for s in per_step)  # within one rollout the blocks exit at different steps
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_the_critic_learns_from_a_fresh_rollout(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("self_forcing", steps=2, extra=["dmd.critic_steps=1"]), tmp_path, progress=False)
    rollouts, critic_inputs = [], []
    real_rollout, real_critic = objectives.self_forcing_rollout, objectives.critic_loss

    def rollout(*args, **kw):
        out = real_rollout(*args, **kw)
        rollouts.append((kw["grad"], out.latents.detach().clone()))
        return out

    def critic(xs, *args, **kw):
        critic_inputs.append((len(rollouts), xs["latents"].clone()))
        return real_critic(xs, *args, **kw)

    monkeypatch.setattr(objectives, "self_forcing_rollout", rollout)
    monkeypatch.setattr(objectives, "critic_loss", critic)
    trainer.train()
    assert [g for g, _ in rollouts] == [True, False, True, False]  # per step: the generator's, then a fresh one
    for n_before, xs in critic_inputs:
        grad, fresh = rollouts[n_before - 1]
        assert not grad and torch.equal(xs, fresh)  # the critic's batch is the new no-grad rollout
        assert not torch.equal(xs, rollouts[n_before - 2][1])  # not the generator's (stored) one


def test_objectives_get_what_they_need_and_the_trainer_knows_no_recipe_names():
    import ast
    import inspect

    from streamgen.training import objectives_rollout, recipes, trainer

    for module in (objectives, objectives_rollout):  # objectives never reach for the trainer
        tree = ast.parse(inspect.getsource(module))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "trainer" not in names, module.__name__
    literals = {n.value for n in ast.walk(ast.parse(inspect.getsource(trainer))) if isinstance(n, ast.Constant)}
    assert not literals & set(recipes.RECIPES), "the trainer branches on recipe names"
    assert set(recipes.OBJECTIVES) == set(recipes.RECIPES)


def test_the_regression_anchor_adds_the_rollouts_error_against_the_recording(tmp_path):
    from streamgen.training.config import DMDConfig
    from streamgen.training.modalities import VIDEO, sample_of

    with pytest.raises(ValueError, match="regression_weight=0.1 needs context_blocks >= 1"):
        DMDConfig(regression_weight=0.1)
    runs = {}
    for w in (0.0, 1.0):
        t = Trainer(tiny_config("self_forcing", steps=1, extra=["model=tiny-world", "dmd.context_blocks=1",
                                                                 f"dmd.regression_weight={w}"]), tmp_path / str(w), progress=False)
        runs[w] = (t, t.train(), t.objective.networks["student"].state_dict())
    (pure, pure_losses, pure_state), (anchored, losses, state) = runs[0.0], runs[1.0]
    assert "regression" not in pure_losses and losses["regression"] > 0
    assert any(not torch.equal(pure_state[k], state[k]) for k in state)  # the anchor reached the student's update
    # The anchor compares the generated frames (after the real context) with the recording's same frames.
    batch = anchored.objective.ctx.batch(0)
    real = sample_of(batch)
    assert float(anchored.objective.anchor_loss(real, batch)) == 0.0
    moved = {k: x.clone() for k, x in real.items()}
    n = anchored.objective.ctx.model_config.frames_per_block
    moved[VIDEO][:, :n] += 1.0  # only the real context block's frames differ
    assert float(anchored.objective.anchor_loss(moved, batch)) == 0.0
    moved[VIDEO][:, -1] += 1.0
    assert float(anchored.objective.anchor_loss(moved, batch)) > 0.0
